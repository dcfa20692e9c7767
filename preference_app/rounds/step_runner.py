"""The life of one round step's task: queueing it, claiming the round so that the step runs once,
the heartbeat while it runs, recording its results with the move to the next status, and
recovering steps whose worker died or whose message was lost.

Every step task first claims the round with a conditional update, so a duplicated or redelivered
message finds it claimed and does nothing. The step's slow work (sampling, training) runs outside
any transaction; what it produced is written in one transaction together with the move to the next
status, and only if the round is still in the claimed step (an admin may have cancelled it
meanwhile). A step that raises marks the round failed, keeps the error for the dashboard, and
remembers the step so a retry resumes there.

A worker can also die without raising (SIGKILL, out of memory, a lost machine). While a step runs,
a heartbeat thread refreshes `step_claimed`; `round_recover_stalled` (run by the sweeper,
rounds/sweeper.py) fails a round whose heartbeat is older than ROUND_STALL_SECONDS, so the
dashboard shows what happened and a retry can resume. A redelivered task whose claim's holder
process is provably gone takes the step over at once (core/claims.py). A step whose message was
lost before any worker claimed it is sent again by `round_steps_requeue`.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from preference_app.core import claims
from preference_app.core.models import TrainingRound
from preference_app.core.task_queue import task_enqueue_on_commit

logger = logging.getLogger(__name__)

Status = TrainingRound.Status
STEP_TEXT_AFTER = {
    Status.COMPLETED: "Done",
    Status.COLLECTING: "Waiting for judgments",
    Status.AWAITING_VERDICT: "Waiting for people to judge the blind head-to-heads",
}
# The status each step task works in, and the status the round moves to when it succeeds.
NEXT_STATUS = {
    Status.GENERATING: Status.COLLECTING,
    Status.TRAINING_REWARD: Status.TRAINING_POLICY,
    Status.TRAINING_POLICY: Status.EVALUATING,
    Status.EVALUATING: Status.AWAITING_VERDICT,
}
Finish = Callable[[TrainingRound], None]
WORKING = (Status.GENERATING, Status.TRAINING_REWARD, Status.TRAINING_POLICY, Status.EVALUATING)


def step_enqueue(round_id: int, status: str) -> None:
    """Queue the task of a step once the transaction that moved the round there commits."""
    # Imported here: the tasks import the steps, which import the state machine, which imports this.
    from preference_app.rounds import tasks

    task = {
        Status.GENERATING: tasks.round_generate,
        Status.TRAINING_REWARD: tasks.train_round_reward,
        Status.TRAINING_POLICY: tasks.train_round_policy,
        Status.EVALUATING: tasks.train_round_evaluate,
    }[status]
    TrainingRound.objects.filter(pk=round_id).update(step_queued=timezone.now())
    task_enqueue_on_commit(task, round_id, unavailable=lambda error: _round_unqueued(round_id, status, error))


def _round_unqueued(round_id: int, status: str, error: Exception) -> None:
    """Fail a round whose next step could not be queued, so an admin sees why and can retry it."""
    TrainingRound.objects.filter(pk=round_id, status__in=(status, Status.PENDING), step_claimed__isnull=True).update(
        status=Status.FAILED,
        failed_status=status,
        error=f"The step could not be queued because the task broker was unreachable ({error}). Retry once it is back.",
        finished=timezone.now(),
    )


def _claim_step(round_id: int, status: str, holder: str) -> bool:
    """Mark the step as taken by `holder`; False when another delivery already took it.

    A claim that is dead (core.claims: its heartbeat is older than ROUND_STALL_SECONDS, or its
    holder's process on this machine is gone) may be taken over: a pool child killed mid-step has its
    message redelivered at once, and the new delivery resumes the step then. A step already claimed
    MAX_ATTEMPTS times fails the round instead, as whatever killed its workers would kill this one.
    """
    now = timezone.now()
    claimable = [status, Status.PENDING] if status == Status.GENERATING else [status]
    seen = TrainingRound.objects.filter(pk=round_id, status__in=claimable).values(
        "status", "step_claimed", "step_claimed_by", "step_attempts"
    ).first()
    if seen is None:
        return False
    # Conditional on the claim as it was seen: of two deliveries racing here, one updates the row.
    as_seen = TrainingRound.objects.filter(
        pk=round_id, status=seen["status"], step_claimed=seen["step_claimed"], step_claimed_by=seen["step_claimed_by"]
    )
    if seen["step_claimed"] is not None:
        if not claims.claim_is_dead(claimed=seen["step_claimed"], holder=seen["step_claimed_by"], now=now):
            return False
        if seen["step_attempts"] >= claims.MAX_ATTEMPTS:
            as_seen.update(
                status=Status.FAILED, failed_status=status, step_claimed=None, finished=now,
                error=f"The worker running this step died {seen['step_attempts']} times without finishing "
                      f"(probably out of memory); it was not started again. Retry once the cause is fixed.",
            )
            return False
        logger.warning("Round %s step %s: its holder %s is dead; taking the step over.", round_id, status,
                       seen["step_claimed_by"])
    return bool(as_seen.update(
        status=status, step_claimed=now, step_claimed_by=holder, step_attempts=F("step_attempts") + 1,
        started=now, progress=0.0, step="Starting",
    ))


def step_run(round_id: int, status: str, work: Callable[[TrainingRound], Finish]) -> bool:
    """Claim the step, do its work, then record its results and advance, all or nothing."""
    holder = claims.holder_current()
    if not _claim_step(round_id, status, holder):
        logger.info("Round %s step %s is already taken or over; skipping this delivery.", round_id, status)
        return False
    training_round = TrainingRound.objects.get(pk=round_id)
    # Only this holder's claim: a worker that was taken over must neither refresh nor fail the new one's.
    mine = TrainingRound.objects.filter(pk=round_id, status=status, step_claimed_by=holder)
    try:
        began = time.monotonic()
        with claims.Heartbeat(lambda: mine.filter(step_claimed__isnull=False).update(step_claimed=timezone.now()),
                              name=f"round-{round_id}-heartbeat"):
            finish = work(training_round)
        seconds = time.monotonic() - began
        with transaction.atomic():
            locked = TrainingRound.objects.select_for_update().get(pk=round_id)
            if locked.status != status or locked.step_claimed_by != holder:
                logger.info("Round %s left %s or was taken over while it ran (now %s); results discarded.",
                            round_id, status, locked.status)
                return False
            finish(locked)
            _step_seconds_record(locked, status, seconds)
            # A step's results may finish the round by themselves (a policy the guard refused).
            if locked.status == status:
                locked.status = _status_after(locked, status)
                locked.step = STEP_TEXT_AFTER.get(locked.status, "Queued")
            locked.step_claimed = None
            locked.step_claimed_by = ""
            locked.step_attempts = 0
            locked.progress = 0.0
            locked.save()
            if locked.status in (Status.TRAINING_REWARD, Status.TRAINING_POLICY, Status.EVALUATING):
                step_enqueue(round_id, locked.status)
    except Exception as error:
        mine.update(
            status=Status.FAILED,
            failed_status=status,
            step_claimed=None,
            error=f"{type(error).__name__}: {error}\n\n{traceback.format_exc(limit=8)}",
            finished=timezone.now(),
        )
        raise
    return True


def _status_after(locked: TrainingRound, status: str) -> str:
    """The status a round moves to when its `status` step succeeds. A round that waits for no
    judgments (judgment_target 0: the demo's round on the imported pairs) skips collecting."""
    following = NEXT_STATUS[status]
    if following == Status.COLLECTING and locked.config.get("judgment_target") == 0:
        return Status.TRAINING_REWARD
    return following


def _step_seconds_record(locked: TrainingRound, status: str, seconds: float) -> None:
    """Keep how long the step's work took in the round's `metrics["step_seconds"]`, by status.

    The start form estimates a new round's time from these (round_plan.rates_measured), so they
    are the work's own wall-clock time on this server's worker, from claim to results; a step that
    was retried or taken over records the run that finished it.
    """
    step_seconds = {**locked.metrics.get("step_seconds", {}), str(status): round(seconds, 1)}
    locked.metrics = {**locked.metrics, "step_seconds": step_seconds}


def round_recover_stalled(*, now=None) -> list[int]:
    """Fail every round whose running step has had no heartbeat for ROUND_STALL_SECONDS.

    Such a step's worker was killed or lost without raising, so nothing else would ever move the
    round on. Each round is failed with a conditional update on the claim time it was seen with: a
    heartbeat that arrives in between wins, and the round is left running. Returns the failed ids.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.ROUND_STALL_SECONDS)
    failed = []
    stalled = TrainingRound.objects.filter(status__in=WORKING, step_claimed__lt=stale_before)
    for round_id, status, claimed in stalled.values_list("pk", "status", "step_claimed"):
        error = (
            f"The worker running this step stopped responding: its last heartbeat was at "
            f"{claimed:%Y-%m-%d %H:%M:%S} UTC, more than {settings.ROUND_STALL_SECONDS} s before "
            f"{now:%H:%M:%S}. It was probably killed or ran out of memory; nothing it produced was "
            f"registered. Retry to run the step again."
        )
        if TrainingRound.objects.filter(pk=round_id, status=status, step_claimed=claimed).update(
            status=Status.FAILED, failed_status=status, step_claimed=None, step_claimed_by="", error=error, finished=now
        ):
            logger.warning("Round %s failed: no heartbeat from its %s step since %s.", round_id, status, claimed)
            failed.append(round_id)
    return failed


def round_steps_requeue(*, now=None) -> list[int]:
    """Send again the task of every step that waited WORK_REQUEUE_SECONDS since it was sent without
    being claimed: its message was lost (a broker restarted without persistence), and nothing else
    would ever run it, while the round would block every new one. Returns the rounds sent again.

    Each send is a conditional update on the time the step was last sent, so two sweeps at once send
    it once; a duplicate message would do no harm anyway, as the step is claimed before it runs.
    """
    now = now or timezone.now()
    requeue_before = now - timedelta(seconds=settings.WORK_REQUEUE_SECONDS)
    waiting = TrainingRound.objects.filter(status__in=(Status.PENDING, *WORKING), step_claimed__isnull=True).filter(
        Q(step_queued__lt=requeue_before) | Q(step_queued__isnull=True, created__lt=requeue_before)
    )
    requeued = []
    for round_id, status, queued in waiting.values_list("pk", "status", "step_queued"):
        with transaction.atomic():
            if not TrainingRound.objects.filter(pk=round_id, status=status, step_claimed__isnull=True,
                                                step_queued=queued).update(step_queued=now):
                continue
            logger.warning("Round %s step %s was never claimed; sending its task again.", round_id, status)
            step_enqueue(round_id, Status.GENERATING if status == Status.PENDING else status)
        requeued.append(round_id)
    return requeued
