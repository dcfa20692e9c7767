"""Reads of the preference data used by views, commands and tasks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from preference_app.core.models import Candidate, Comparison, GenerationBatch, Judgment, ModelVersion, Prompt, Turn


def model_version_serving(*, kind: str = ModelVersion.Kind.POLICY) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, is_serving=True).select_related("parent").first()


def messages_before(turns: Iterable[Turn], context_length: int) -> list[dict[str, str]]:
    """The turns before position `context_length` as chat messages; `turns` come in index order."""
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
