"""Reads for the annotation pages: who may annotate, the queue, progress and live chats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from django.core.cache import caches
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django.utils import timezone

from preference_app.annotation.models import Assignment
from preference_app.core import roles
from preference_app.core.models import Comparison, Conversation, GenerationBatch, Judgment, Turn

# Comparisons of these sources are judged in the queue by anyone. Live-chat turns are judged by the
# annotator who chatted, and an edit comparison is judged by its author when it is made.
QUEUE_SOURCES = [Comparison.Source.GENERATED, Comparison.Source.IMPORTED, Comparison.Source.VERDICT]
# The waiting figure is counted on every page view, so counting stops here ("100+"): past it an
# exact number tells an annotator nothing, and the count's cost grows with the number counted.
WAITING_COUNT_CAP = 100
# A count that reached the cap is remembered this long per annotator and web process, and the page
# says "100+" meanwhile without counting: a queue that deep does not empty between two judgments,
# and the count was the costliest query of every page view. Short queues are counted every time.
WAITING_AT_CAP_REMEMBERED_SECONDS = 60
# What the comparison page shows of a comparison, fetched in the same query as the comparison.
SHOWN_RELATIONS = ("candidate_a", "candidate_b")
# The same, read through an assignment.
ASSIGNMENT_SHOWN_RELATIONS = tuple(f"comparison__{relation}" for relation in SHOWN_RELATIONS)


def user_can_annotate(user) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    if user.is_superuser:
        return True
    held = getattr(user, "holds_annotating_role", None)
    if held is None:
        # Loaded some other way than by the session backend (core.auth), which reads the role with the user.
        held = user.groups.filter(name__in=roles.ANNOTATING_ROLES).exists()
    return held


def _count_of(queryset: QuerySet) -> Coalesce:
    """A correlated COUNT(*) of `queryset` (already filtered on OuterRef) usable in a filter."""
    counted = queryset.order_by().values("comparison").annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _queue_unjudged_by(*, annotator) -> QuerySet[Comparison]:
    """Queue comparisons short of their overlap target that this annotator has neither judged nor skipped.

    Comparisons of a live chat still in progress belong to the annotator chatting and are left out.
    """
    judged_by_me = Judgment.objects.filter(comparison=OuterRef("pk"), annotator=annotator)
    skipped_by_me = Assignment.objects.filter(
        comparison=OuterRef("pk"), annotator=annotator, status=Assignment.Status.SKIPPED
    )
    # A correlated NOT EXISTS on the primary key rather than a join: it costs one index probe per
    # comparison whatever the planner believes about the conversation table.
    chat_in_progress = Conversation.objects.filter(
        pk=OuterRef("conversation_id"), source=Conversation.Source.LIVE_CHAT, ended__isnull=True
    )
    return (
        # judgment_count < overlap_target first: the partial index comparison_still_open holds only
        # those rows, so finished comparisons cost nothing however many accumulate.
        Comparison.objects.filter(judgment_count__lt=F("overlap_target"), source__in=QUEUE_SOURCES)
        .exclude(Exists(chat_in_progress))
        .exclude(Exists(judged_by_me))
        .exclude(Exists(skipped_by_me))
    )


def _unexpired_leases(now: datetime) -> QuerySet[Assignment]:
    """Assignments still reserving their comparison at `now`."""
    return Assignment.objects.filter(status=Assignment.Status.OPEN, expires_at__gt=now)


def comparisons_open_to(*, annotator, now: datetime) -> QuerySet[Comparison]:
    """Comparisons this annotator could be given now, oldest round first.

    A comparison is open while its judgments plus the unexpired leases others hold on it are fewer
    than its overlap target, and this annotator has neither judged nor skipped it.
    """
    leases = _count_of(_unexpired_leases(now).filter(comparison=OuterRef("pk")))
    return (
        _queue_unjudged_by(annotator=annotator)
        .alias(taken=F("judgment_count") + leases)
        .filter(overlap_target__gt=F("taken"))
        # Round ids grow with round numbers, so ordering by the column itself (not the joined
        # number) gives oldest round first and lets PostgreSQL walk comparison_still_open in order
        # and stop at the first free row instead of sorting every open comparison.
        .order_by(F("training_round_id").asc(nulls_last=True), "id")
    )


def comparisons_waiting_for(*, annotator, limit: int) -> int:
    """How many queue comparisons still wait for this annotator, counted up to `limit`.

    Not yet judged or skipped by them and not the one they hold now. Leases other annotators hold
    are not subtracted: the figure is shown on every page view, and counting each comparison's
    leases made it the most expensive query of the page, for a number that is only a guide.
    """
    held_by_me = Assignment.objects.filter(
        comparison=OuterRef("pk"), annotator=annotator, status=Assignment.Status.OPEN
    )
    return _queue_unjudged_by(annotator=annotator).exclude(Exists(held_by_me)).order_by()[:limit].count()


def leases_held(*, comparison: Comparison, now: datetime) -> int:
    """Unexpired leases on one comparison, counted afresh."""
    return _unexpired_leases(now).filter(comparison=comparison).count()


def assignment_current(*, annotator, now: datetime) -> Assignment | None:
    """The queue comparison this annotator holds an unexpired lease on, if any, with its candidates."""
    return (
        _unexpired_leases(now)
        .select_related(*ASSIGNMENT_SHOWN_RELATIONS)
        .filter(annotator=annotator, comparison__source__in=QUEUE_SOURCES)
        .order_by("-served_at")
        .first()
    )


@dataclass(frozen=True)
class Progress:
    judged_today: int
    judged_total: int
    waiting: int  # See comparisons_waiting_for and _waiting_shown_to; at most WAITING_COUNT_CAP.

    @property
    def waiting_label(self) -> str:
        return f"{WAITING_COUNT_CAP}+" if self.waiting >= WAITING_COUNT_CAP else str(self.waiting)


def annotator_progress(*, annotator, now: datetime | None = None) -> Progress:
    now = now or timezone.now()
    midnight = timezone.make_aware(datetime.combine(timezone.localdate(now), time.min))
    # Edit comparisons are judged automatically when an annotator rewrites a reply; counting them
    # would reward editing over judging.
    counts = (
        Judgment.objects.filter(annotator=annotator)
        .exclude(comparison__source=Comparison.Source.EDIT)
        .aggregate(total=Count("id"), today=Count("id", filter=Q(created__gte=midnight)))
    )
    return Progress(judged_today=counts["today"], judged_total=counts["total"], waiting=_waiting_shown_to(annotator))


def _waiting_shown_to(annotator) -> int:
    """The waiting figure for the page: counted, unless a recent count already reached the cap."""
    remembered = caches["process"]
    key = f"annotation:waiting-at-cap:{annotator.pk}"
    if remembered.get(key):
        return WAITING_COUNT_CAP
    waiting = comparisons_waiting_for(annotator=annotator, limit=WAITING_COUNT_CAP)
    if waiting >= WAITING_COUNT_CAP:
        remembered.set(key, True, WAITING_AT_CAP_REMEMBERED_SECONDS)
    return waiting


@dataclass(frozen=True)
class ShownPair:
    """A comparison as one annotator sees it: which candidate is on which side."""

    assignment: Assignment
    comparison: Comparison
    context: list  # Turns before the replies, oldest first.
    left: object
    right: object


def shown_pair(*, assignment: Assignment) -> ShownPair:
    """The assignment's comparison as its annotator sees it.

    The candidates come with the assignment when it was read with ASSIGNMENT_SHOWN_RELATIONS (the
    queue does), so the page then costs one more query, for the context turns.
    """
    comparison = assignment.comparison
    context = list(
        Turn.objects.filter(conversation_id=comparison.conversation_id, index__lt=comparison.context_length)
        .order_by("index")
    )
    a, b = comparison.candidate_a, comparison.candidate_b
    left, right = (a, b) if assignment.left_candidate == Judgment.Side.A else (b, a)
    return ShownPair(assignment=assignment, comparison=comparison, context=context, left=left, right=right)


def chat_get(*, annotator, conversation_id: int) -> Conversation:
    """One of this annotator's live chats; anyone else's is a 404, not a 403, so ids leak nothing."""
    return get_object_or_404(
        Conversation, pk=conversation_id, source=Conversation.Source.LIVE_CHAT, annotator=annotator
    )


def chats_recent(*, annotator, limit: int = 20) -> list[Conversation]:
    return list(
        Conversation.objects.filter(source=Conversation.Source.LIVE_CHAT, annotator=annotator)
        .annotate(turn_count=Count("turns"))
        .order_by("-created", "-id")[:limit]
    )


def chat_pending_comparison(*, annotator, conversation: Conversation, context_length: int) -> Comparison | None:
    """The newest comparison at the conversation's current position this annotator has not judged."""
    return (
        Comparison.objects.select_related(*SHOWN_RELATIONS)
        .filter(conversation=conversation, context_length=context_length)
        .exclude(source=Comparison.Source.EDIT)
        .exclude(judgments__annotator=annotator)
        .order_by("-id")
        .first()
    )


def _chat_batches_newest_first(conversation: Conversation):
    return GenerationBatch.objects.filter(conversations=conversation).order_by("-id")


def chat_latest_batch(*, conversation: Conversation) -> GenerationBatch | None:
    return _chat_batches_newest_first(conversation).first()


def chat_drafts(*, conversation: Conversation) -> list[str] | None:
    """The replies being written for the chat, as the worker last wrote them; None when no batch of
    the chat is pending or running. One query: the chat page polls this twice a second."""
    latest = _chat_batches_newest_first(conversation).values("status", "partial_replies").first()
    if latest is None or latest["status"] not in (GenerationBatch.Status.PENDING, GenerationBatch.Status.RUNNING):
        return None
    return latest["partial_replies"]
