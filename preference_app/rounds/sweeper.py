"""The sweeper: finds background work that nothing would ever finish, and sets it going again.

Celery beat runs `stranded_work_recover` every SWEEPER_PERIOD_SECONDS (CELERY_BEAT_SCHEDULE), so
recovery happens whether or not anyone opens a page, and no page has to write to do it. It lives in
the rounds app because it looks after both floors: core's generation batches (live chat turns) and
the rounds' steps. Everything it changes is a conditional update on the values it read, so two
sweeps at once, or a sweep racing a worker, change each row once; and since every step and batch is
claimed before it runs, a message it sends again never makes the work run twice.
"""

from __future__ import annotations

from preference_app.core.generation import generation_batches_recover
from preference_app.rounds.step_runner import round_recover_stalled, round_steps_requeue


def stranded_work_recover(*, now=None) -> dict[str, list[int]]:
    """One sweep; returns the ids of what it failed and sent again, for the task's result and the log."""
    batches = generation_batches_recover(now=now)
    # Stalled rounds first: a round failed here must not also be sent again as if merely queued.
    rounds_failed = round_recover_stalled(now=now)
    rounds_requeued = round_steps_requeue(now=now)
    return {
        "batches_requeued": batches.requeued,
        "batches_failed": batches.failed,
        "rounds_failed": rounds_failed,
        "rounds_requeued": rounds_requeued,
    }
