"""Reads for the REST API: the lists behind its endpoints, filtered, ordered and prefetched for serializing."""

from __future__ import annotations

from dataclasses import replace

from django.db.models import F, Prefetch, Q, QuerySet

from preference_app.api.filters import PreferenceFilters
from preference_app.api.models import ExportJob, ImportJob
from preference_app.api.votes import comparisons_with_votes, judgments_filtered
from preference_app.core.models import (
    Candidate,
    Comparison,
    Conversation,
    Judgment,
    ModelVersion,
    Prompt,
    TrainingRound,
    Turn,
)
from preference_app.core.selectors import messages_before


def _ordered(queryset: QuerySet, ordering: str | None, default: str) -> QuerySet:
    """Order by a validated sort key, empty values last both ways, then by id so pages are stable."""
    key = ordering or default
    field = F(key.lstrip("-"))
    expression = field.desc(nulls_last=True) if key.startswith("-") else field.asc(nulls_last=True)
    return queryset.order_by(expression, "-id" if key.startswith("-") else "id")


def _context_prefetches(prefix: str = "") -> list[Prefetch]:
    return [
        Prefetch(f"{prefix}conversation", queryset=Conversation.objects.only("id")),
        Prefetch(f"{prefix}conversation__turns", queryset=Turn.objects.only("conversation_id", "index", "role", "text")),
    ]


def context_messages(comparison: Comparison) -> list[dict[str, str]]:
    """The turns before the compared replies, from the prefetched turns of its conversation."""
    turns = sorted(comparison.conversation.turns.all(), key=lambda turn: turn.index)
    return messages_before(turns, comparison.context_length)


def judgment_list(*, user, filters: PreferenceFilters, ordering: str | None = None) -> QuerySet[Judgment]:
    """Judgments the user may read: all for researchers and admins, their own for annotators."""
    visible = Judgment.objects.all() if user.has_perm("core.view_judgment") else Judgment.objects.filter(annotator=user)
    return _ordered(judgments_filtered(filters=filters, queryset=visible), ordering, "id")


def comparison_list(*, filters: PreferenceFilters, ordering: str | None = None) -> QuerySet[Comparison]:
    candidates = Candidate.objects.only("id", "text", "model_version_id")
    every_judgment = replace(filters, created_after=None, created_before=None)
    queryset = (
        comparisons_with_votes(filters=every_judgment)
        .filter(_created_q(filters))
        .prefetch_related(
            Prefetch("candidate_a", queryset=candidates),
            Prefetch("candidate_b", queryset=candidates),
            Prefetch("training_round", queryset=TrainingRound.objects.only("id", "number")),
            *_context_prefetches(),
        )
    )
    return _ordered(queryset, ordering, "id")


def _created_q(filters: PreferenceFilters) -> Q:
    """On the comparison list the date range applies to the comparison's own creation time."""
    condition = Q()
    if filters.created_after is not None:
        condition &= Q(created__gte=filters.created_after)
    if filters.created_before is not None:
        condition &= Q(created__lt=filters.created_before)
    return condition


def prompt_list(*, source=None, created_after=None, created_before=None, search=None, ordering=None) -> QuerySet[Prompt]:
    queryset = Prompt.objects.filter(_created_q(PreferenceFilters(created_after=created_after, created_before=created_before)))
    if source is not None:
        queryset = queryset.filter(source=source)
    if search:
        queryset = queryset.filter(text__icontains=search)
    return _ordered(queryset, ordering, "id")


def training_round_list(*, status=None, ordering=None) -> QuerySet[TrainingRound]:
    queryset = TrainingRound.objects.all()
    if status is not None:
        queryset = queryset.filter(status=status)
    return _ordered(queryset, ordering, "-number")


def model_version_list(*, kind=None, round=None, ordering=None) -> QuerySet[ModelVersion]:
    queryset = ModelVersion.objects.select_related("training_round", "parent")
    if kind is not None:
        queryset = queryset.filter(kind=kind)
    if round is not None:
        queryset = queryset.filter(training_round__number=round)
    return _ordered(queryset, ordering, "-id")


def export_job_list(*, user) -> QuerySet[ExportJob]:
    """A requester sees only their own export jobs and downloads."""
    return ExportJob.objects.filter(requested_by=user).order_by("-created")


def import_job_list(*, user) -> QuerySet[ImportJob]:
    """A requester sees only the import jobs they started; jobs started from the shell are in the admin."""
    return ImportJob.objects.filter(requested_by=user).order_by("-created")
