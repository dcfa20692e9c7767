"""Celery tasks of a training round: each takes the round's id and runs one step's service.

Generation runs on the default queue; the training steps' names start with `train_`, which routes
them to the `training` queue (CELERY_TASK_ROUTES), where GPU workers can take them. acks_late is
safe on all of them because each step claims the round before working (see step_runner.step_run).
"""

from celery import shared_task

from preference_app.rounds import steps, sweeper

STEP_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(**STEP_OPTIONS)
def round_generate(round_id: int) -> bool:
    return steps.round_generate(round_id=round_id)


@shared_task(**STEP_OPTIONS)
def train_round_reward(round_id: int) -> bool:
    return steps.round_train_reward(round_id=round_id)


@shared_task(**STEP_OPTIONS)
def train_round_policy(round_id: int) -> bool:
    return steps.round_train_policy(round_id=round_id)


@shared_task(**STEP_OPTIONS)
def train_round_evaluate(round_id: int) -> bool:
    return steps.round_evaluate(round_id=round_id)


@shared_task
def stranded_work_recover() -> dict:
    """The sweeper, run by celery beat (CELERY_BEAT_SCHEDULE); safe to run twice or at once."""
    return sweeper.stranded_work_recover()
