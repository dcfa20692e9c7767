"""Judgments: storing one annotator's verdict on a comparison, once, and announcing it after the commit."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F

from preference_app.core import events
from preference_app.core.errors import InvalidInput
from preference_app.core.models import Comparison, Judgment

MAX_RATIONALE_CHARS = 5000
ALLOWED_FLAGS = {"unsafe", "unusable"}


@dataclass(frozen=True)
class JudgmentOutcome:
    judgment: Judgment
    created: bool  # False when this annotator had already judged the comparison (double submit).


def judgment_submit(
    *,
    annotator,
    comparison: Comparison,
    choice: str,
    strength: int | None,
    left_candidate: str,
    rationale: str = "",
    flags: list[str] | None = None,
    seconds_spent: float = 0.0,
) -> JudgmentOutcome:
    """Store one annotator's judgment of a comparison, once.

    A second submit by the same annotator (double click, retried request) returns the judgment
    already stored instead of failing: the database's uniqueness constraint decides the race.
    """
    if choice not in Judgment.Choice.values:
        raise InvalidInput(f"Choice must be one of {', '.join(Judgment.Choice.values)}.")
    if choice in (Judgment.Choice.A, Judgment.Choice.B):
        if not isinstance(strength, int) or isinstance(strength, bool) or not 1 <= strength <= 4:
            raise InvalidInput("A preference for A or B needs a strength from 1 (slightly) to 4 (much better).")
    elif strength is not None:
        raise InvalidInput("Ties and both-bad judgments carry no strength.")
    if left_candidate not in Judgment.Side.values:
        raise InvalidInput("left_candidate must be 'a' or 'b'.")
    if len(rationale) > MAX_RATIONALE_CHARS:
        raise InvalidInput(f"A rationale may have at most {MAX_RATIONALE_CHARS} characters.")
    flags = sorted(set(flags or []))
    if not set(flags) <= ALLOWED_FLAGS:
        raise InvalidInput(f"Flags must be among {', '.join(sorted(ALLOWED_FLAGS))}.")
    if not isinstance(seconds_spent, (int, float)) or seconds_spent < 0:
        raise InvalidInput("seconds_spent must be a non-negative number.")
    # An hour caps the time of a judgment left open in a forgotten tab, so it cannot skew statistics.
    seconds_spent = min(float(seconds_spent), 3600.0)
    try:
        with transaction.atomic():
            judgment = Judgment.objects.create(
                comparison=comparison,
                annotator=annotator,
                choice=choice,
                strength=strength,
                left_candidate=left_candidate,
                rationale=rationale.strip(),
                flags=flags,
                seconds_spent=seconds_spent,
            )
            Comparison.objects.filter(pk=comparison.pk).update(judgment_count=F("judgment_count") + 1)
    except IntegrityError:
        existing = Judgment.objects.filter(comparison=comparison, annotator=annotator).first()
        if existing is None:
            raise
        return JudgmentOutcome(judgment=existing, created=False)
    # Apps above core (rounds counts judgments towards its targets) react after the commit, outside
    # the annotator's transaction, so their work neither slows nor can fail the judgment.
    events.publish_on_commit(events.judgment_recorded, sender=Judgment, comparison=comparison)
    return JudgmentOutcome(judgment=judgment, created=True)
