"""Reads for training rounds: the data each step trains on, and the dashboard's statistics."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, F, Prefetch, Q
from django.utils import timezone

from preference_app.api.filters import PreferenceFilters
from preference_app.api.pseudonyms import annotator_pseudonym
from preference_app.api.selectors import preference_pairs_iter
from preference_app.core.models import (
    Demonstration,
    Judgment,
    ModelVersion,
    Prompt,
    TrainingRound,
    Turn,
)
from preference_app.core.selectors import messages_before
from preference_app.rounds import leaderboard
from training.data import Demonstration as TrainingDemonstration
from training.data import PreferencePair

HELD_OUT_PROMPT_PREFIXES = ("0", "1")  # 2/16 of prompts by text hash: a fixed evaluation set.
HELD_OUT_COMPARISON_MODULUS = 10  # Every tenth comparison is kept out of reward-model training.


def base_policy(version: ModelVersion) -> ModelVersion:
    """Follow `parent` links back to the version every later policy descends from."""
    while version.parent_id is not None:
        version = version.parent
    return version


def held_out_prompts() -> list[Prompt]:
    """The fixed evaluation prompts, chosen by text hash so the set never changes as data grows."""
    query = Q()
    for prefix in HELD_OUT_PROMPT_PREFIXES:
        query |= Q(text_sha256__startswith=prefix)
    return list(Prompt.objects.filter(query).order_by("id"))


def prompts_for_generation(*, limit: int) -> list[Prompt]:
    """Prompts used least so far (held-out ones never), oldest first."""
    excluded = Q()
    for prefix in HELD_OUT_PROMPT_PREFIXES:
        excluded |= Q(text_sha256__startswith=prefix)
    return list(
        Prompt.objects.exclude(excluded).annotate(uses=Count("conversations")).order_by("uses", "id")[:limit]
    )


def preference_pairs(*, held_out_split: bool) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Every decided comparison as a (context, chosen, rejected, margin) pair for training.

    The same pairs and aggregation rule as the researchers' export (api.selectors): the most common
    choice of a comparison's judgments decides it, ties and both-bad outcomes are left out, and the
    margin is the mean strength of the agreeing judgments. With `held_out_split`, every tenth
    comparison goes to the second list, a fixed slice for the reward model's held-out accuracy.
    """
    train, held_out = [], []
    for exported in preference_pairs_iter(filters=PreferenceFilters()):
        pair = PreferencePair(prompt=exported.messages, chosen=exported.chosen, rejected=exported.rejected,
                              margin=exported.margin)
        if held_out_split and exported.comparison_id % HELD_OUT_COMPARISON_MODULUS == 0:
            held_out.append(pair)
        else:
            train.append(pair)
    return train, held_out


def demonstrations_for_sft() -> list[TrainingDemonstration]:
    ordered_turns = Prefetch("conversation__turns", queryset=Turn.objects.order_by("index"))
    demonstrations = Demonstration.objects.prefetch_related(ordered_turns).order_by("id")
    return [
        TrainingDemonstration(
            prompt=messages_before(demonstration.conversation.turns.all(), demonstration.context_length),
            completion=demonstration.text,
        )
        for demonstration in demonstrations
    ]


def round_judgment_count(*, training_round: TrainingRound) -> int:
    return Judgment.objects.filter(comparison__training_round=training_round).count()


@dataclass(frozen=True)
class RoundProgress:
    training_round: TrainingRound
    judgments: int
    judgment_target: int
    eta_seconds: float | None


def round_progress(*, training_round: TrainingRound) -> RoundProgress:
    """Where a round stands, with a rough ETA for the current step from its progress so far."""
    target = training_round.config.get("judgment_target", 0)
    eta = None
    if training_round.step_claimed and 0 < training_round.progress < 1:
        elapsed = (timezone.now() - training_round.step_claimed).total_seconds()
        eta = elapsed * (1 - training_round.progress) / training_round.progress
    return RoundProgress(
        training_round=training_round,
        judgments=round_judgment_count(training_round=training_round),
        judgment_target=target,
        eta_seconds=eta,
    )


def active_round() -> TrainingRound | None:
    finished = [TrainingRound.Status.COMPLETED, TrainingRound.Status.FAILED, TrainingRound.Status.CANCELLED]
    return TrainingRound.objects.exclude(status__in=finished).order_by("-number").first()


def round_history(limit: int = 50) -> list[TrainingRound]:
    return list(TrainingRound.objects.order_by("-number")[:limit])


def policy_leaderboard() -> list[leaderboard.Rating]:
    """Ratings of policy versions from human judgments of comparisons between two versions."""
    games = []
    head_to_head = (
        Judgment.objects.filter(comparison__candidate_a__model_version__isnull=False,
                                comparison__candidate_b__model_version__isnull=False)
        .exclude(comparison__candidate_a__model_version=F("comparison__candidate_b__model_version"))
        .exclude(choice=Judgment.Choice.BOTH_BAD)
        .values_list("choice", "comparison__candidate_a__model_version__name", "comparison__candidate_b__model_version__name")
    )
    for choice, first, second in head_to_head.iterator(chunk_size=2000):
        score = {"a": 1.0, "b": 0.0, "tie": 0.5}[choice]
        games.append(leaderboard.Game(first=first, second=second, score=score))
    return leaderboard.rate(games)


@dataclass(frozen=True)
class AnnotatorStatistics:
    pseudonym: str
    judgments: int
    agreement: float | None  # Share of overlapping A/B judgments agreeing with the others' majority.
    left_choice_rate: float | None  # Share of A/B judgments that picked the left-hand reply.
    median_seconds: float | None
    judged_today: int


def annotator_statistics() -> list[AnnotatorStatistics]:
    by_comparison: dict[int, list[tuple[int, str]]] = defaultdict(list)
    per_annotator: dict[int, list[Judgment]] = defaultdict(list)
    for judgment in Judgment.objects.only("annotator_id", "comparison_id", "choice", "left_candidate", "seconds_spent", "created").iterator(chunk_size=2000):
        per_annotator[judgment.annotator_id].append(judgment)
        if judgment.choice in ("a", "b"):
            by_comparison[judgment.comparison_id].append((judgment.annotator_id, judgment.choice))
    today = timezone.now() - timedelta(hours=24)
    result = []
    for annotator_id, judgments in sorted(per_annotator.items()):
        agreements = []
        for judgment in judgments:
            others = [choice for who, choice in by_comparison.get(judgment.comparison_id, []) if who != annotator_id]
            if judgment.choice in ("a", "b") and others:
                majority = Counter(others).most_common(1)[0][0]
                agreements.append(judgment.choice == majority)
        sided = [judgment for judgment in judgments if judgment.choice in ("a", "b")]
        left = [judgment.choice == judgment.left_candidate for judgment in sided]
        result.append(
            AnnotatorStatistics(
                pseudonym=annotator_pseudonym(annotator_id),
                judgments=len(judgments),
                agreement=sum(agreements) / len(agreements) if agreements else None,
                left_choice_rate=sum(left) / len(left) if left else None,
                median_seconds=statistics.median(j.seconds_spent for j in judgments) if judgments else None,
                judged_today=sum(1 for judgment in judgments if judgment.created >= today),
            )
        )
    return result
