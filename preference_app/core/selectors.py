"""Reads of the preference data used by views, commands and tasks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from preference_app.core import claims
from preference_app.core.models import Candidate, Comparison, GenerationBatch, Judgment, ModelVersion, Prompt, Turn


def model_version_serving(*, kind: str = ModelVersion.Kind.POLICY) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, is_serving=True).select_related("parent").first()


def generation_batch_is_stranded(*, batch: GenerationBatch, now: datetime) -> bool:
    """Whether nothing will finish the batch by itself soon: pending for WORK_REQUEUE_SECONDS since
    its task was sent (the message was probably lost), or running under a dead claim."""
    if batch.status == GenerationBatch.Status.PENDING:
        return (batch.enqueued or batch.created) < now - timedelta(seconds=settings.WORK_REQUEUE_SECONDS)
    if batch.status == GenerationBatch.Status.RUNNING:
        return claims.claim_is_dead(claimed=batch.claimed, holder=batch.claimed_by, now=now)
    return False


def messages_before(turns: Iterable[Turn], context_length: int) -> list[dict[str, str]]:
    """The turns before position `context_length` as chat messages.

    `turns` come in index order: Turn rows, or any rows with `index`, `role` and `text` (the export
    reads named tuples).
    """
    return [{"role": turn.role, "content": turn.text} for turn in turns if turn.index < context_length]


@dataclass(frozen=True)
class CollectionOverview:
    prompts: int
    candidates: int
    comparisons: int
    judgments: int
    generation_batches_pending: int
    serving_policy: ModelVersion | None


def collection_overview() -> CollectionOverview:
    """The headline numbers shown on the home page."""
    return CollectionOverview(
        prompts=Prompt.objects.count(),
        candidates=Candidate.objects.count(),
        comparisons=Comparison.objects.count(),
        judgments=Judgment.objects.count(),
        generation_batches_pending=GenerationBatch.objects.filter(
            status__in=[GenerationBatch.Status.PENDING, GenerationBatch.Status.RUNNING]
        ).count(),
        serving_policy=model_version_serving(),
    )
