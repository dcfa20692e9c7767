"""Reads for exports: preference pairs and raw judgment rows streamed a chunk at a time, and the
agreement statistics of a dataset card.

Every export read goes through `QuerySet.iterator(chunk_size=...)` with per-chunk prefetching, so the
memory an export holds is one chunk of rows, whatever the number of rows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace

from django.db.models import Count, F, Q, QuerySet

from preference_app.api.filters import PreferenceFilters
from preference_app.api.formats import batched
from preference_app.api.votes import CHOICES, comparison_outcome, comparisons_with_votes, judgments_filtered
from preference_app.core.models import Candidate, Comparison, Turn
from preference_app.core.selectors import messages_before

# Rows per database round trip. Each chunk's prefetch puts one parameter per row into an IN list,
# and SQLite allows at most 999 parameters in a query.
EXPORT_CHUNK_SIZE = 500


def _wins(choice: str) -> Q:
    """The SQL form of `comparison_outcome(...) == choice`: strictly more votes than every other choice."""
    condition = Q()
    for other in CHOICES:
        if other != choice:
            condition &= Q(**{f"votes_{choice}__gt": F(f"votes_{other}")})
    return condition


_A_WINS = _wins("a")
_B_WINS = _wins("b")


@dataclass(frozen=True)
class PreferencePair:
    comparison_id: int
    messages: list[dict[str, str]]
    chosen: str
    rejected: str
    margin: float  # Mean strength of the judgments that agree with the outcome; 0.0 for a tie.
    outcome: str


def preference_pairs(*, filters: PreferenceFilters, include_ties: bool = False) -> QuerySet[Comparison]:
    """Judged comparisons that become pairs: decided ones, and ties (as margin 0) when asked.

    `min_strength` applies to the margin, so it drops pairs whose agreeing judgments were weak on
    average (Bai et al. 2022 dropped the weakest preferences the same way).
    """
    queryset = comparisons_with_votes(filters=filters).filter(judgment_total__gt=0)
    if not include_ties:
        queryset = queryset.filter(_A_WINS | _B_WINS)
    if filters.min_strength is not None:
        strong = filters.min_strength
        queryset = queryset.filter((_A_WINS & Q(strength_a__gte=strong)) | (_B_WINS & Q(strength_b__gte=strong)))
    return queryset.order_by("id")


def _contexts(batch: list[dict]) -> dict[int, list[tuple]]:
    """The turns of a chunk's conversations, in one query: {conversation id: [turn rows in index order]}.

    The rows are named tuples (index, role, text and conversation_id), not model instances, which
    would cost most of an export's time.
    """
    turns: dict[int, list[tuple]] = defaultdict(list)
    rows = (
        Turn.objects.filter(conversation_id__in={row["conversation_id"] for row in batch})
        .order_by("conversation_id", "index")
        .values_list("conversation_id", "index", "role", "text", named=True)
    )
    for row in rows:
        turns[row.conversation_id].append(row)
    return turns


def preference_pairs_iter(
    *, filters: PreferenceFilters, include_ties: bool = False, chunk_size: int = EXPORT_CHUNK_SIZE
) -> Iterator[PreferencePair]:
    """The pairs, read as plain values a chunk at a time (model instances would cost most of the time).

    Candidate texts and context turns are fetched per chunk, outside the aggregating query, so its
    GROUP BY stays on the comparison's own columns.
    """
    rows = preference_pairs(filters=filters, include_ties=include_ties).values(
        "id", "conversation_id", "context_length", "candidate_a_id", "candidate_b_id", "strength_a", "strength_b",
        *(f"votes_{choice}" for choice in CHOICES),
    )
    for batch in batched(rows.iterator(chunk_size=chunk_size), chunk_size):
        turns = _contexts(batch)
        candidate_ids = {row["candidate_a_id"] for row in batch} | {row["candidate_b_id"] for row in batch}
        texts = dict(Candidate.objects.filter(id__in=candidate_ids).values_list("id", "text"))
        for row in batch:
            outcome = comparison_outcome({choice: row[f"votes_{choice}"] for choice in CHOICES})
            first, second = texts[row["candidate_a_id"]], texts[row["candidate_b_id"]]
            if outcome == "b":
                chosen, rejected, margin = second, first, row["strength_b"]
            elif outcome == "a":
                chosen, rejected, margin = first, second, row["strength_a"]
            else:
                chosen, rejected, margin = first, second, 0.0
            yield PreferencePair(
                comparison_id=row["id"],
                messages=messages_before(turns[row["conversation_id"]], row["context_length"]),
                chosen=chosen,
                rejected=rejected,
                margin=float(margin),
                outcome=outcome,
            )


RAW_FIELDS = {
    "judgment_id": "id",
    "comparison_id": "comparison_id",
    "round": "comparison__training_round__number",
    "comparison_source": "comparison__source",
    "annotator_id": "annotator_id",
    "choice": "choice",
    "strength": "strength",
    "left_candidate": "left_candidate",
    "seconds_spent": "seconds_spent",
    "flags": "flags",
    "rationale": "rationale",
    "created": "created",
    "conversation_id": "comparison__conversation_id",
    "context_length": "comparison__context_length",
    "candidate_a": "comparison__candidate_a__text",
    "candidate_b": "comparison__candidate_b__text",
    "candidate_a_model_version": "comparison__candidate_a__model_version__name",
    "candidate_b_model_version": "comparison__candidate_b__model_version__name",
    "candidate_a_tokens": "comparison__candidate_a__token_count",
    "candidate_b_tokens": "comparison__candidate_b__token_count",
    "candidate_a_finished_with_eos": "comparison__candidate_a__finished_with_eos",
    "candidate_b_finished_with_eos": "comparison__candidate_b__finished_with_eos",
}


def judgment_rows_iter(*, filters: PreferenceFilters, chunk_size: int = EXPORT_CHUNK_SIZE) -> Iterator[dict]:
    """Every filtered judgment as a dict of RAW_FIELDS plus `context` (its messages), a chunk at a time."""
    # Django refuses an alias equal to a field name, so those fields are asked for by name.
    rows = judgments_filtered(filters=filters).order_by("id").values(
        *(path for name, path in RAW_FIELDS.items() if name == path),
        **{name: F(path) for name, path in RAW_FIELDS.items() if name != path},
    )
    for batch in batched(rows.iterator(chunk_size=chunk_size), chunk_size):
        turns = _contexts(batch)
        for row in batch:
            row["context"] = messages_before(turns[row["conversation_id"]], row["context_length"])
            yield row


@dataclass(frozen=True)
class AgreementStatistics:
    comparisons: int  # Judged comparisons in the selection.
    judgments: int
    multiply_judged: int  # Comparisons with two or more judgments.
    unanimous: int  # Of those, how many had every judgment agree.
    pairwise_agreement: float | None  # Chance that two judgments of one comparison agree.
    mean_majority_agreement: float | None  # Mean fraction of judgments agreeing with the outcome.
    choices: dict[str, int]
    outcomes: dict[str, int]
    strengths: dict[str, int]


def flagged_comparison_count(*, filters: PreferenceFilters) -> int:
    """Judged comparisons passing the other filters that an annotator flagged unsafe or unusable."""
    return comparisons_with_votes(filters=replace(filters, flagged=True)).filter(judgment_total__gt=0).count()


def agreement_statistics(*, filters: PreferenceFilters) -> AgreementStatistics:
    """Statistics for a dataset card, streamed over the vote counts so memory stays flat."""
    rows = (
        comparisons_with_votes(filters=filters)
        .filter(judgment_total__gt=0)
        .order_by()
        .values_list("votes_a", "votes_b", "votes_tie", "votes_both_bad")
    )
    comparisons = judgments = multiply_judged = unanimous = 0
    agreeing_pairs = all_pairs = 0
    majority_sum = 0.0
    choices: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for counts in rows.iterator(chunk_size=EXPORT_CHUNK_SIZE):
        votes = dict(zip(CHOICES, counts))
        total = sum(counts)
        comparisons += 1
        judgments += total
        choices.update(votes)
        outcomes[comparison_outcome(votes)] += 1
        if total >= 2:
            multiply_judged += 1
            unanimous += max(counts) == total
            agreeing_pairs += sum(count * (count - 1) for count in counts)
            all_pairs += total * (total - 1)
            majority_sum += max(counts) / total
    strengths = Counter(
        dict(
            judgments_filtered(filters=replace(filters, min_strength=None))
            .filter(strength__isnull=False)
            .order_by()
            .values_list("strength")
            .annotate(n=Count("id"))
        )
    )
    return AgreementStatistics(
        comparisons=comparisons,
        judgments=judgments,
        multiply_judged=multiply_judged,
        unanimous=unanimous,
        pairwise_agreement=agreeing_pairs / all_pairs if all_pairs else None,
        mean_majority_agreement=majority_sum / multiply_judged if multiply_judged else None,
        choices={choice: choices[choice] for choice in CHOICES},
        outcomes={choice: outcomes[choice] for choice in CHOICES},
        strengths={str(strength): strengths[strength] for strength in range(1, 5)},
    )
