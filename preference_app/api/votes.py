"""Vote aggregation shared by the read API and exports: which judgments and comparisons the filters
select, comparisons annotated with their votes, and the majority rule that decides an outcome."""

from __future__ import annotations

from django.db.models import Avg, Count, ExpressionWrapper, F, FloatField, Q, QuerySet
from django.db.models.functions import Greatest

from preference_app.api.filters import PreferenceFilters
from preference_app.api.pseudonyms import annotator_id_from_pseudonym
from preference_app.core.models import Comparison, Judgment

CHOICES = ("a", "b", "tie", "both_bad")
# No user has this id: a pseudonym that names nobody selects no judgments rather than all of them.
NO_USER_ID = -1


def _judgment_q(filters: PreferenceFilters, prefix: str = "") -> Q:
    """Which judgments count: by annotator and date. These also scope the votes of comparisons."""
    condition = Q()
    if filters.annotator is not None:
        user_id = annotator_id_from_pseudonym(filters.annotator)
        condition &= Q(**{f"{prefix}annotator_id": NO_USER_ID if user_id is None else user_id})
    if filters.created_after is not None:
        condition &= Q(**{f"{prefix}created__gte": filters.created_after})
    if filters.created_before is not None:
        condition &= Q(**{f"{prefix}created__lt": filters.created_before})
    return condition


def _comparison_q(filters: PreferenceFilters, prefix: str = "") -> Q:
    condition = Q()
    if filters.round_number is not None:
        condition &= Q(**{f"{prefix}training_round__number": filters.round_number})
    if filters.model_version is not None:
        condition &= Q(**{f"{prefix}candidate_a__model_version_id": filters.model_version}) | Q(
            **{f"{prefix}candidate_b__model_version_id": filters.model_version}
        )
    if filters.source is not None:
        condition &= Q(**{f"{prefix}source": filters.source})
    if filters.comparison is not None:
        condition &= Q(**{f"{prefix}pk": filters.comparison})
    if filters.flagged is not None:
        flagged = Q(**{f"{prefix}pk__in": Judgment.objects.exclude(flags=[]).values("comparison_id")})
        condition &= flagged if filters.flagged else ~flagged
    if filters.cut_off is not None:
        cut = Q(**{f"{prefix}candidate_a__finished_with_eos": False}) | Q(
            **{f"{prefix}candidate_b__finished_with_eos": False}
        )
        condition &= cut if filters.cut_off else ~cut
    return condition


def comparisons_with_votes(*, filters: PreferenceFilters) -> QuerySet[Comparison]:
    """Comparisons annotated with their votes per choice, the mean strength per side, and agreement.

    Only judgments passing the annotator and date filters are counted. `min_agreement` keeps
    comparisons whose most common choice has at least that fraction of the counted judgments.
    """
    counted = _judgment_q(filters, prefix="judgments__")

    def votes(choice: str) -> Count:
        return Count("judgments", filter=counted & Q(judgments__choice=choice))

    queryset = (
        Comparison.objects.filter(_comparison_q(filters))
        .annotate(
            votes_a=votes("a"),
            votes_b=votes("b"),
            votes_tie=votes("tie"),
            votes_both_bad=votes("both_bad"),
            judgment_total=Count("judgments", filter=counted),
            strength_a=Avg("judgments__strength", filter=counted & Q(judgments__choice="a")),
            strength_b=Avg("judgments__strength", filter=counted & Q(judgments__choice="b")),
        )
        .annotate(votes_top=Greatest("votes_a", "votes_b", "votes_tie", "votes_both_bad"))
    )
    if filters.min_agreement is not None:
        needed = ExpressionWrapper(F("judgment_total") * filters.min_agreement, output_field=FloatField())
        queryset = queryset.filter(judgment_total__gt=0, votes_top__gte=needed)
    return queryset


def comparison_outcome(votes: dict[str, int]) -> str:
    """The aggregation rule: the choice most judgments made; equally common leaders make a tie."""
    top = max(votes.values())
    leaders = [choice for choice, count in votes.items() if count == top]
    return leaders[0] if len(leaders) == 1 else "tie"


def comparison_votes(comparison: Comparison) -> dict[str, int]:
    return {choice: getattr(comparison, f"votes_{choice}") for choice in CHOICES}


def judgments_filtered(*, filters: PreferenceFilters, queryset: QuerySet[Judgment] | None = None) -> QuerySet[Judgment]:
    """Judgments passing every filter; `min_strength` and `choice` apply to each judgment."""
    queryset = Judgment.objects.all() if queryset is None else queryset
    queryset = queryset.filter(_judgment_q(filters) & _comparison_q(filters, prefix="comparison__"))
    if filters.min_strength is not None:
        queryset = queryset.filter(strength__gte=filters.min_strength)
    if filters.choice is not None:
        queryset = queryset.filter(choice=filters.choice)
    if filters.min_agreement is not None:
        agreeing = comparisons_with_votes(filters=filters).values("pk")
        queryset = queryset.filter(comparison__in=agreeing)
    return queryset
