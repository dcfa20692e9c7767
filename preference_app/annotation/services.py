"""Writes of the annotation queue: leasing comparisons to annotators, judging and skipping them.

The judgment itself is always stored by `core.services.judgment_submit`; this module decides what
an annotator is shown, translates what they clicked (left/right on a scale) into a judgment of the
comparison's candidates, and records how long they looked at it. The live chat (`chat.py`) judges
its own pairs through the same assignments.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from preference_app.annotation import selectors
from preference_app.annotation.models import Assignment
from preference_app.core.errors import InvalidInput
from preference_app.core.models import Comparison, Judgment
from preference_app.core.services import JudgmentOutcome, judgment_submit

# Long enough for a careful judgment of two long replies; short enough that a comparison left open
# in an abandoned tab goes back to the queue the same session.
LEASE_DURATION = timedelta(minutes=10)
# A lease is taken under a row lock, then the comparison's slots are counted again; another
# annotator may have filled the last slot in between, in which case the next candidate is tried.
MAX_LEASE_ATTEMPTS = 10

# The scale as shown: positions 1-4 prefer the left reply (much better .. slightly better), 5-8 the
# right one (slightly better .. much better). Each maps to (side, strength) with strength 4 = much.
SCALE = {
    "1": ("left", 4),
    "2": ("left", 3),
    "3": ("left", 2),
    "4": ("left", 1),
    "5": ("right", 1),
    "6": ("right", 2),
    "7": ("right", 3),
    "8": ("right", 4),
}
TIE = "tie"
BOTH_BAD = "both_bad"


def preference_to_choice(*, preference: str, left_candidate: str) -> tuple[str, int | None]:
    """Translate a scale position seen on screen into (choice, strength) over candidates a and b."""
    if preference == TIE:
        return Judgment.Choice.TIE, None
    if preference == BOTH_BAD:
        return Judgment.Choice.BOTH_BAD, None
    if preference not in SCALE:
        raise InvalidInput("Choose a point on the scale, “about the same” or “both are bad”.")
    side, strength = SCALE[preference]
    right_candidate = Judgment.Side.B if left_candidate == Judgment.Side.A else Judgment.Side.A
    return (left_candidate if side == "left" else right_candidate), strength


def _lease(*, annotator, comparison: Comparison, now: datetime) -> Assignment:
    """Open (or reopen, after expiry) this annotator's assignment to the comparison."""
    expires_at = now + LEASE_DURATION
    try:
        # Nearly every lease is a first one, so the insert is tried first: one statement instead
        # of update_or_create's lookup, insert and their savepoints.
        with transaction.atomic():
            assignment = Assignment.objects.create(
                comparison=comparison,
                annotator=annotator,
                status=Assignment.Status.OPEN,
                served_at=now,
                expires_at=expires_at,
                # Left or right is drawn once per annotator and comparison, so a reload shows the same layout.
                left_candidate=random.choice(Judgment.Side.values),
            )
    except IntegrityError:
        # A lease that expired, or one this annotator's other tab took a moment ago: reopen it as it was drawn.
        assignment = Assignment.objects.select_for_update().get(comparison=comparison, annotator=annotator)
        assignment.status, assignment.served_at, assignment.expires_at = Assignment.Status.OPEN, now, expires_at
        assignment.save(update_fields=["status", "served_at", "expires_at"])
    assignment.comparison = comparison  # Keeps the candidates the caller fetched with it.
    return assignment


def _commit_without_waiting_for_disk() -> None:
    """Let this transaction's COMMIT return before PostgreSQL has flushed it to disk.

    Used for leases only. A flush costs about 3 ms here, a tenth of a submit. A lease is a
    reservation, not anything an annotator made, and it is flushed with the next synchronous commit
    or by the WAL writer within a fraction of a second; only a crash of PostgreSQL itself inside
    that window can forget it, and then the judgment of that one pair is refused with a clear
    message. Judgments keep the default, synchronous commit.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def assignment_next(*, annotator, now: datetime | None = None) -> Assignment | None:
    """The comparison this annotator should judge now, leased to them; None when the queue is empty.

    An annotator holds at most one lease: asking again (a reload, a second tab) returns the same one.
    On PostgreSQL the candidate row is locked with SKIP LOCKED, so concurrent requests each take a
    different comparison instead of queueing behind one another; the slots are then counted again
    under the lock, because the first query's snapshot may predate a lease another request has just
    committed. SQLite ignores the row lock and serialises writers instead, which is enough for the
    single-user development server.
    """
    now = now or timezone.now()
    current = selectors.assignment_current(annotator=annotator, now=now)
    if current is not None:
        return current
    for _ in range(MAX_LEASE_ATTEMPTS):
        with transaction.atomic():
            comparison = (
                selectors.comparisons_open_to(annotator=annotator, now=now)
                .select_related(*selectors.SHOWN_RELATIONS)
                .select_for_update(skip_locked=True, of=("self",))
                .first()
            )
            if comparison is None:
                return None
            # The lock returns the row's latest committed judgment_count, so only leases need counting.
            taken = comparison.judgment_count + selectors.leases_held(comparison=comparison, now=now)
            if taken >= comparison.overlap_target:
                continue
            _commit_without_waiting_for_disk()
            return _lease(annotator=annotator, comparison=comparison, now=now)
    return None


NOT_GIVEN_TO_YOU = "This comparison was not given to you; the next one has been loaded instead."


def assignment_for(
    *, annotator, comparison_id: int, sources: list[str], relations: tuple[str, ...] = ("comparison",),
    refusal: str = NOT_GIVEN_TO_YOU,
) -> Assignment:
    """This annotator's assignment to the comparison, with `relations` fetched in the same query."""
    assignment = (
        Assignment.objects.select_related(*relations)
        .filter(annotator=annotator, comparison_id=comparison_id, comparison__source__in=sources)
        .first()
    )
    if assignment is None:
        raise InvalidInput(refusal)
    return assignment


def assignment_judgment_store(
    *, annotator, assignment: Assignment, choice: str, strength: int | None, rationale: str,
    flags: list[str] | None, now: datetime,
) -> JudgmentOutcome:
    """Store the judgment of an assignment; position and time come from the assignment, not the client.

    The stored left side is the one drawn when the pair was served, and the time spent runs from then
    to now, so neither can be forged or lost by the page or a script.
    """
    with transaction.atomic():
        outcome = judgment_submit(
            annotator=annotator,
            comparison=assignment.comparison,
            choice=choice,
            strength=strength,
            left_candidate=assignment.left_candidate,
            rationale=rationale,
            flags=flags,
            seconds_spent=max((now - assignment.served_at).total_seconds(), 0.0),
        )
        Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.JUDGED)
    return outcome


def assignment_judge(
    *,
    annotator,
    comparison_id: int,
    preference: str,
    rationale: str = "",
    flags: list[str] | None = None,
    now: datetime | None = None,
) -> JudgmentOutcome:
    """Judge a queue comparison that was served to this annotator.

    A judgment arriving after the lease expired is still stored: losing work is worse than a
    comparison collecting one judgment more than its overlap target.
    """
    assignment = assignment_for(annotator=annotator, comparison_id=comparison_id, sources=selectors.QUEUE_SOURCES)
    choice, strength = preference_to_choice(preference=preference, left_candidate=assignment.left_candidate)
    return assignment_judgment_store(
        annotator=annotator, assignment=assignment, choice=choice, strength=strength, rationale=rationale,
        flags=flags, now=now or timezone.now(),
    )


def assignment_judge_by_choice(
    *,
    annotator,
    comparison_id: int,
    choice: str,
    strength: int | None,
    rationale: str = "",
    flags: list[str] | None = None,
    now: datetime | None = None,
) -> JudgmentOutcome:
    """Judge a queue comparison leased to this annotator, in terms of candidates a and b (the API).

    The same path as the page: only a comparison served to the caller (POST /api/assignments/next/)
    can be judged, the left side and the time spent come from the lease, and a comparison that met
    its overlap target while the caller's lease had lapsed is refused rather than over-judged.
    """
    now = now or timezone.now()
    assignment = assignment_for(
        annotator=annotator, comparison_id=comparison_id, sources=selectors.QUEUE_SOURCES,
        refusal="This comparison is not leased to you: take one with POST /api/assignments/next/ first.",
    )
    comparison = assignment.comparison
    lapsed = assignment.status != Assignment.Status.OPEN or assignment.expires_at <= now
    already_mine = assignment.status == Assignment.Status.JUDGED
    if lapsed and not already_mine and comparison.judgment_count >= comparison.overlap_target:
        raise InvalidInput("Your lease on this comparison lapsed and it has all the judgments it needs; take the next one.")
    return assignment_judgment_store(
        annotator=annotator, assignment=assignment, choice=choice, strength=strength, rationale=rationale,
        flags=flags, now=now,
    )


def assignment_skip(*, annotator, comparison_id: int) -> None:
    """Give the comparison back and never serve it to this annotator again; judged ones stay judged."""
    Assignment.objects.filter(
        annotator=annotator, comparison_id=comparison_id, status=Assignment.Status.OPEN
    ).update(status=Assignment.Status.SKIPPED)
