"""A Celery worker killed with SIGKILL in the middle of reward or DPO training.

The worker gets no chance to record anything, so only its missing heartbeat tells: the round must
then be failed with that error shown, no model version registered, no checkpoint directory left
under its final name half-written; and a retry on another worker must register exactly one version.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from preference_app.core import roles
from preference_app.core.models import ModelVersion, TrainingRound
from preference_app.rounds import services
from preference_app.rounds.round_settings import RoundSettings
from tests.conftest import make_user, wait_for
from tests.reliability.conftest import a_round_ready_to_train, worker_process

pytestmark = [pytest.mark.fault, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

HEARTBEAT_SECONDS = 1
STALL_SECONDS = 3
# The most epochs round settings allow, over PAIRS pairs: far more steps than the test waits for, so
# the worker is always killed while still training.
ENDLESS = 20
PAIRS = 240
STEPS = {
    "reward": ("training_reward", "preference_app.rounds.tasks.train_round_reward", "reward_epochs", "reward"),
    "dpo": ("training_policy", "preference_app.rounds.tasks.train_round_policy", "epochs", "policy"),
}
CHECKPOINT_FILES = {"config.json", "model.safetensors", "training_config.json", "metrics.json"}


def checkpoints_under_final_names(models_dir) -> list:
    """Checkpoint directories a loader would open: those not hidden as staging or retired copies."""
    return [path for path in models_dir.glob("round-*/*") if path.is_dir() and not path.name.startswith(".")]


def is_complete(checkpoint) -> bool:
    return CHECKPOINT_FILES <= {path.name for path in checkpoint.iterdir()}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_round_whose_worker_is_killed_mid_training_fails_visibly_and_a_retry_registers_one_version(
    step, tiny_model_dir, private_broker, admin_user, client, settings
):
    status, task, epochs_key, kind = STEPS[step]
    settings.ROUND_STALL_SECONDS = STALL_SECONDS
    # The linear-probe reward model fits in one L-BFGS solve, too fast to be killed mid-way; the
    # fine-tuned one trains in epochs like the policy.
    config = RoundSettings(batch_size=4, max_length=64, reward_method="finetune", **{epochs_key: ENDLESS}).to_dict()
    training_round = a_round_ready_to_train(tiny_model_dir, make_user("ann", roles.ANNOTATOR), status=status,
                                            pairs=PAIRS, config=config)
    env = private_broker.environment(ROUND_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS), ROUND_STALL_SECONDS=str(STALL_SECONDS))

    with worker_process(env, name=f"doomed-{step}") as worker:
        private_broker.send(task, training_round.pk, queue="training")
        wait_for(lambda: TrainingRound.objects.get(pk=training_round.pk).progress > 0, timeout=120,
                 message=f"{step} training to report progress")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    # Right after the kill the last heartbeat is still fresh, so the round is given the benefit of the doubt.
    assert services.round_recover_stalled() == []
    assert wait_for(services.round_recover_stalled, timeout=STALL_SECONDS * 5, message="the stall to be noticed") == [
        training_round.pk
    ]
    failed = TrainingRound.objects.get(pk=training_round.pk)
    assert (failed.status, failed.failed_status, failed.step_claimed) == ("failed", status, None)
    assert "stopped responding" in failed.error
    assert not ModelVersion.objects.filter(training_round=training_round).exists()
    assert all(is_complete(path) for path in checkpoints_under_final_names(private_broker.models_dir))
    client.force_login(admin_user)
    assert "stopped responding" in client.get("/rounds/").content.decode()

    # The retry finishes quickly: one epoch instead of the endless run the dead worker was on.
    TrainingRound.objects.filter(pk=training_round.pk).update(config={**failed.config, epochs_key: 1})
    assert services.round_retry(round_id=training_round.pk)
    with worker_process(env, name=f"rescuer-{step}"):
        private_broker.send(task, training_round.pk, queue="training")
        wait_for(lambda: TrainingRound.objects.get(pk=training_round.pk).status != status, timeout=120,
                 message=f"the retried {step} step to finish")
        # The next step was queued on the private broker; it is not under test, so the round stops here.
        services.round_cancel(round_id=training_round.pk)
    versions = ModelVersion.objects.filter(training_round=training_round, kind=kind)
    assert versions.count() == 1
    assert is_complete(Path(versions.get().path))
