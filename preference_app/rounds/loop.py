"""The auto-loop's policy: whether a completed round is followed by another, and with which settings.

Reads only. The state machine (services.py) asks here and starts the round itself: after a verdict
(`round_continue_loop`) and after each judgment (`round_auto_start_check`).
"""

from __future__ import annotations

from dataclasses import dataclass

from preference_app.core.models import Judgment, TrainingRound
from preference_app.rounds.selectors import round_settings_of

Status = TrainingRound.Status


@dataclass(frozen=True)
class LoopDecision:
    """Start the next round with `settings_values`, or (None) stop the loop for `stopped_because`."""

    settings_values: dict | None = None
    stopped_because: str = ""


def loop_decision(training_round: TrainingRound) -> LoopDecision | None:
    """Step 4: the loop goes on while it has rounds left and people judged the last new policy
    better than the one it replaced, beyond their interval. None when the round takes no part in
    the loop (it is not completed, or its settings ask for no further rounds)."""
    round_settings = round_settings_of(training_round)
    if training_round.status != Status.COMPLETED or round_settings.auto_rounds < 1:
        return None
    low = training_round.metrics.get("human_win_rate_low")
    by_people = training_round.metrics.get("verdict_by") == "people" and training_round.metrics.get("promoted")
    gain = None if low is None else low - 0.5
    if not by_people or gain is None or gain < round_settings.min_win_rate_gain:
        shown = "none measured" if gain is None else f"{gain:+.3f}"
        return LoopDecision(stopped_because=f"people's verdict: lower bound minus 0.5 is {shown}")
    return LoopDecision(settings_values={**round_settings.to_dict(), "auto_rounds": round_settings.auto_rounds - 1})


def auto_start_due() -> TrainingRound | None:
    """The last round, when it completed and its `auto_start_after_judgments` new judgments have
    arrived since; the next round starts with its settings. None when that is off or not yet so."""
    last = TrainingRound.objects.order_by("-number").first()
    if last is None or last.status != Status.COMPLETED or last.finished is None:
        return None
    threshold = round_settings_of(last).auto_start_after_judgments
    if threshold < 1 or Judgment.objects.filter(created__gt=last.finished).count() < threshold:
        return None
    return last
