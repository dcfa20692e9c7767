"""Work stranded by a broker crash or a killed pool child is recovered without anyone opening a page.

A chat turn and a round step are queued on a Redis of the test's own with no worker running; Redis
is killed with SIGKILL and restarted empty (no persistence), so both messages are gone. A worker and
celery beat (the sweeper, on a short period) then bring the chat its two replies and move the round
on, each run once. And a prefork pool child killed mid-DPO has its message redelivered at once; the
new child sees the old holder's process gone and takes the step over without waiting the stall time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import psutil
import pytest
import redis
from celery import Celery
from django.utils import timezone

from preference_app.core.generation import generation_batch_record
from preference_app.core.models import (
    Comparison,
    Conversation,
    GenerationBatch,
    ModelVersion,
    TrainingRound,
    Turn,
)
from preference_app.core.prompts import builtin_prompts_load
from preference_app.rounds import services
from preference_app.rounds.round_settings import RoundSettings
from tests.conftest import REPO_ROOT, TEST_OUTPUT, child_environment, wait_for
from tests.reliability.conftest import WORKER_READY_SECONDS, a_round_ready_to_train, worker_process

pytestmark = [pytest.mark.fault, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SWEEPER_PERIOD_SECONDS = 5
REQUEUE_SECONDS = 10
HEARTBEAT_SECONDS = 2
# The default stall time: the takeover below must not wait for it.
STALL_SECONDS = 300
# 20 epochs (the most a round allows) over this many pairs, two a step: DPO outlasts the test's kill.
LONG_DPO_PAIRS = 200


@contextmanager
def celery_process(env: dict[str, str], *, name: str, arguments: list[str], ready: str):
    """A celery process (worker or beat) with its own log under test-output/; stopped on exit."""
    log_path = TEST_OUTPUT / "reliability" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "preference_app", *arguments], cwd=REPO_ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: process.poll() is not None or ready in log_path.read_text(), timeout=WORKER_READY_SECONDS,
                     message=f"{name} to start (see {log_path})")
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited at start-up; see {log_path}.")
            yield process
        finally:
            # Children first: a pool child left training would outlive its master.
            for child in psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []:
                child.kill()
            process.kill()
            process.wait(timeout=20)


def queued_on(redis_server) -> int:
    client = redis.Redis(port=redis_server.port)
    return sum(client.llen(queue) for queue in ("default", "training"))


def test_a_chat_turn_and_a_round_step_lost_with_redis_are_recovered_by_the_sweeper(redis_server, tiny_model_dir,
                                                                                    tmp_path, annotator):
    policy = ModelVersion.objects.create(name="base:tiny", kind="policy", path=str(tiny_model_dir),
                                         base_model_id="tiny", is_serving=True)
    builtin_prompts_load()
    conversation = Conversation.objects.create(source=Conversation.Source.LIVE_CHAT, annotator=annotator)
    Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text="Tell me about owls.")
    chat_batch = generation_batch_record(model_version=policy, conversations=[conversation],
                                         sampling={"candidates_per_context": 2, "max_new_tokens": 4})
    config = RoundSettings(prompts_per_round=2, candidates_per_prompt=2, max_new_tokens=4, head_to_head=False)
    training_round = TrainingRound.objects.create(number=1, config=config.to_dict(), step="Queued",
                                                  step_queued=timezone.now())
    GenerationBatch.objects.filter(pk=chat_batch.pk).update(enqueued=timezone.now())
    sender = Celery("stranded-sender", broker=redis_server.url, set_as_current=False)
    sender.send_task("preference_app.core.tasks.generate_candidates", args=[chat_batch.pk], queue="default")
    sender.send_task("preference_app.rounds.tasks.round_generate", args=[training_round.pk], queue="default")
    assert queued_on(redis_server) == 2

    redis_server.stop()
    redis_server.start()
    restarted = time.monotonic()
    assert queued_on(redis_server) == 0

    env = child_environment()
    env.update(REDIS_URL=redis_server.url, CELERY_BROKER_URL=redis_server.url,
               SWEEPER_PERIOD_SECONDS=str(SWEEPER_PERIOD_SECONDS), WORK_REQUEUE_SECONDS=str(REQUEUE_SECONDS))
    beat = ["beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "celerybeat-schedule")]
    with worker_process(env, name="stranded-worker", queues="chat,default,training"), \
            celery_process(env, name="stranded-beat", arguments=beat, ready="beat: Starting"):
        limit = SWEEPER_PERIOD_SECONDS + REQUEUE_SECONDS + 60
        wait_for(lambda: GenerationBatch.objects.get(pk=chat_batch.pk).status == "done", timeout=limit,
                 message="the chat's replies")
        chat_seconds = time.monotonic() - restarted
        wait_for(lambda: TrainingRound.objects.get(pk=training_round.pk).status != "pending"
                 and TrainingRound.objects.get(pk=training_round.pk).step_claimed is None, timeout=limit,
                 message="the round to move on")
        round_seconds = time.monotonic() - restarted
    print(f"after the Redis restart: chat replies in {chat_seconds:.1f} s, round moved on in {round_seconds:.1f} s")

    moved = TrainingRound.objects.get(pk=training_round.pk)
    assert moved.status == "collecting", moved.error
    assert chat_seconds < limit and round_seconds < limit
    # Each ran once: one claim of the chat's batch, one generation batch and two comparisons for the round.
    assert GenerationBatch.objects.get(pk=chat_batch.pk).attempts == 1
    assert Comparison.objects.filter(conversation=conversation).count() == 1
    assert GenerationBatch.objects.filter(training_round=training_round).count() == 1
    assert Comparison.objects.filter(training_round=training_round).count() == moved.metrics["comparisons"] == 2


def test_a_pool_child_killed_mid_dpo_is_taken_over_at_once_not_after_the_stall_time(redis_server, tiny_model_dir,
                                                                                       annotator):
    # Enough judged pairs that DPO runs for a while.
    training_round = a_round_ready_to_train(tiny_model_dir, annotator, status="training_policy", pairs=LONG_DPO_PAIRS,
                                            config=RoundSettings(batch_size=2, max_length=64, epochs=20).to_dict())
    env = child_environment()
    env.update(REDIS_URL=redis_server.url, CELERY_BROKER_URL=redis_server.url,
               ROUND_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS), ROUND_STALL_SECONDS=str(STALL_SECONDS))
    worker = ["worker", "--pool", "prefork", "--concurrency", "1", "--queues", "training", "--loglevel", "INFO",
              "--without-heartbeat", "--without-gossip", "--without-mingle", "--hostname", "prefork@%h"]
    sender = Celery("pool-sender", broker=redis_server.url, set_as_current=False)
    with celery_process(env, name="prefork-worker", arguments=worker, ready="ready."):
        sender.send_task("preference_app.rounds.tasks.train_round_policy", args=[training_round.pk], queue="training")
        wait_for(lambda: TrainingRound.objects.get(pk=training_round.pk).progress > 0, timeout=180,
                 message="DPO to report progress")
        holder = TrainingRound.objects.get(pk=training_round.pk).step_claimed_by
        child_pid = int(holder.rsplit(":", 2)[1])
        os.kill(child_pid, signal.SIGKILL)
        killed = time.monotonic()
        taken = wait_for(lambda: TrainingRound.objects.filter(pk=training_round.pk, status="training_policy")
                         .exclude(step_claimed_by=holder).exclude(step_claimed_by="").first(),
                         timeout=HEARTBEAT_SECONDS + 60, message="another pool child to take the step over")
        taken_seconds = time.monotonic() - killed
        wait_for(lambda: TrainingRound.objects.get(pk=training_round.pk).progress > 0, timeout=120,
                 message="DPO to report progress again")
        resumed_seconds = time.monotonic() - killed
        services.round_cancel(round_id=training_round.pk)
    print(f"after the pool child's SIGKILL: step taken over in {taken_seconds:.1f} s, "
          f"DPO progressing again in {resumed_seconds:.1f} s (stall time {STALL_SECONDS} s)")
    assert taken.step_attempts == 2
    assert taken_seconds < HEARTBEAT_SECONDS + 60 < STALL_SECONDS
    assert not ModelVersion.objects.filter(training_round=training_round).exists()
