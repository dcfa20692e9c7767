"""Building candidate and comparison rows: the one place that says how a reply and a pair are stored.

Generation, the leaderboard's head-to-heads, the promotion verdicts, annotators' edits and imports
all store replies and pairs. The `*_new` builders return unsaved rows, so that the import can still
insert a whole batch with `bulk_create`; the `*_create` functions save one row.
"""

from __future__ import annotations

from typing import Any, Protocol

from preference_app.core.models import Candidate, Comparison, Conversation, ModelVersion, TrainingRound


class SampledReply(Protocol):
    """What a model's reply carries (training.generate.GeneratedReply), named here without loading torch."""

    text: str
    token_count: int
    finished_with_eos: bool
    seconds: float


def candidate_new(
    *,
    conversation: Conversation,
    context_length: int,
    text: str,
    model_version: ModelVersion | None = None,
    sampling: dict[str, Any] | None = None,
    edited_from: Candidate | None = None,
    author=None,
) -> Candidate:
    """An unsaved candidate written by a person (an import, an edit) or, with `model_version`, by a model."""
    return Candidate(
        conversation=conversation,
        context_length=context_length,
        text=text,
        model_version=model_version,
        sampling=sampling or {},
        edited_from=edited_from,
        author=author,
    )


def candidate_create(**fields) -> Candidate:
    """Save a candidate built by `candidate_new` from these fields."""
    candidate = candidate_new(**fields)
    candidate.save(force_insert=True)
    return candidate


def candidate_create_from_reply(
    *,
    conversation: Conversation,
    context_length: int,
    reply: SampledReply,
    model_version: ModelVersion,
    sampling: dict[str, Any],
) -> Candidate:
    """Save a model's reply as a candidate, with how it was sampled and how long it took."""
    candidate = candidate_new(
        conversation=conversation,
        context_length=context_length,
        text=reply.text,
        model_version=model_version,
        sampling=sampling,
    )
    candidate.token_count = reply.token_count
    candidate.finished_with_eos = reply.finished_with_eos
    candidate.generation_seconds = reply.seconds
    candidate.save(force_insert=True)
    return candidate


def comparison_new(
    first: Candidate,
    second: Candidate,
    *,
    source: str,
    training_round: TrainingRound | None = None,
    overlap_target: int = 1,
    judgment_count: int = 0,
) -> Comparison:
    """An unsaved comparison of two candidates of the same context; `first` is stored as candidate A."""
    return Comparison(
        conversation=first.conversation,
        context_length=first.context_length,
        candidate_a=first,
        candidate_b=second,
        training_round=training_round,
        source=source,
        overlap_target=overlap_target,
        judgment_count=judgment_count,
    )


def comparison_create(
    first: Candidate,
    second: Candidate,
    *,
    source: str,
    training_round: TrainingRound | None = None,
    overlap_target: int = 1,
) -> Comparison:
    """Save a comparison of two candidates of the same context, still to be judged."""
    comparison = comparison_new(first, second, source=source, training_round=training_round,
                                overlap_target=overlap_target)
    comparison.save(force_insert=True)
    return comparison
