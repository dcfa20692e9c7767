"""The sweeper (rounds/sweeper.py): work whose task message was lost is sent again once per timeout,
work whose worker stopped beating is failed, concurrent sweeps change each row once, and a
redelivered round step takes over at once from a holder whose process is gone."""

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from preference_app.annotation.chat import ChatState, chat_state
from preference_app.celery import app
from preference_app.core import claims
from preference_app.core.generation import generation_batch_record
from preference_app.core.models import Comparison, Conversation, GenerationBatch, ModelVersion, TrainingRound, Turn
from preference_app.core.prompts import builtin_prompts_load
from preference_app.rounds import services, steps
from preference_app.rounds.round_settings import RoundSettings
from preference_app.rounds.sweeper import stranded_work_recover
from tests.conftest import make_user, wait_for

LONG_AGO = timedelta(hours=1)
TINY_ROUND = RoundSettings(prompts_per_round=2, candidates_per_prompt=2, max_new_tokens=4, head_to_head=False)


def serving_tiny_policy(tiny_model_dir) -> ModelVersion:
    return ModelVersion.objects.create(name="base:tiny", kind="policy", path=str(tiny_model_dir), base_model_id="tiny",
                                       is_serving=True)


def chat_turn_waiting(policy, *, sent_ago: timedelta, annotator=None) -> GenerationBatch:
    """A live chat's reply request, recorded but (like one whose message was lost) never delivered."""
    conversation = Conversation.objects.create(source=Conversation.Source.LIVE_CHAT, annotator=annotator)
    Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text="Tell me about owls.")
    sampling = {"candidates_per_context": 2, "max_new_tokens": 4}
    batch = generation_batch_record(model_version=policy, conversations=[conversation], sampling=sampling)
    GenerationBatch.objects.filter(pk=batch.pk).update(enqueued=timezone.now() - sent_ago)
    return batch


def a_round(status: str, **fields) -> TrainingRound:
    return TrainingRound.objects.create(number=TrainingRound.objects.count() + 1, status=status,
                                        config=TINY_ROUND.to_dict(), step="Queued", **fields)


def test_the_beat_schedule_runs_the_sweeper_task_every_period():
    entry = django_settings.CELERY_BEAT_SCHEDULE["stranded-work-recover"]
    assert entry["task"] in app.tasks
    assert entry["schedule"] == django_settings.SWEEPER_PERIOD_SECONDS
    assert entry["options"]["expires"] == django_settings.SWEEPER_PERIOD_SECONDS


def test_a_chat_turn_unclaimed_past_the_timeout_is_sent_again_once(db, tiny_model_dir):
    policy = serving_tiny_policy(tiny_model_dir)
    lost = chat_turn_waiting(policy, sent_ago=LONG_AGO)
    recent = chat_turn_waiting(policy, sent_ago=timedelta(seconds=1))
    assert stranded_work_recover()["batches_requeued"] == [lost.pk]
    lost.refresh_from_db()
    assert lost.enqueued > timezone.now() - timedelta(minutes=1)
    # The next sweep finds it sent a moment ago, so it waits another timeout before sending again.
    assert stranded_work_recover()["batches_requeued"] == []
    assert GenerationBatch.objects.get(pk=recent.pk).status == "pending"


def test_a_rounds_own_batch_is_left_to_its_round_step(db, tiny_model_dir):
    policy = serving_tiny_policy(tiny_model_dir)
    batch = chat_turn_waiting(policy, sent_ago=LONG_AGO)
    GenerationBatch.objects.filter(pk=batch.pk).update(training_round=a_round("collecting"))
    assert stranded_work_recover()["batches_requeued"] == []


def test_a_chat_turn_whose_worker_stopped_beating_is_failed_and_the_chat_offers_a_retry(db, tiny_model_dir, annotator):
    policy = serving_tiny_policy(tiny_model_dir)
    batch = chat_turn_waiting(policy, sent_ago=LONG_AGO, annotator=annotator)
    stale = timezone.now() - timedelta(seconds=django_settings.ROUND_STALL_SECONDS + 5)
    GenerationBatch.objects.filter(pk=batch.pk).update(status="running", claimed=stale,
                                                       claimed_by="another-host:1:1.00")
    assert stranded_work_recover()["batches_failed"] == [batch.pk]
    batch.refresh_from_db()
    assert batch.status == "failed" and "stopped responding" in batch.error
    assert chat_state(annotator=annotator, conversation=batch.conversations.get()).phase == ChatState.FAILED


def test_a_round_step_queued_but_never_claimed_is_sent_again_after_the_timeout(db):
    lost = a_round("training_reward", step_queued=timezone.now() - LONG_AGO)
    a_round("cancelled", step_queued=timezone.now() - LONG_AGO)
    assert stranded_work_recover()["rounds_requeued"] == [lost.pk]
    lost.refresh_from_db()
    assert lost.status == "training_reward" and lost.step_queued > timezone.now() - timedelta(minutes=1)
    assert stranded_work_recover()["rounds_requeued"] == []


def test_a_round_step_whose_heartbeat_stopped_is_failed_by_the_sweeper_not_sent_again(db):
    stale = timezone.now() - timedelta(seconds=django_settings.ROUND_STALL_SECONDS + 5)
    stalled = a_round("training_policy", step_claimed=stale, step_claimed_by="another-host:1:1.00",
                      step_queued=timezone.now() - LONG_AGO)
    swept = stranded_work_recover()
    assert (swept["rounds_failed"], swept["rounds_requeued"]) == ([stalled.pk], [])
    stalled.refresh_from_db()
    assert (stalled.status, stalled.failed_status) == ("failed", "training_policy")
    assert "stopped responding" in stalled.error


@pytest.mark.django_db(transaction=True)
def test_sweeps_running_at_the_same_time_send_each_lost_message_once(tiny_model_dir):
    policy = serving_tiny_policy(tiny_model_dir)
    lost = [chat_turn_waiting(policy, sent_ago=LONG_AGO).pk for _ in range(3)]
    queued = a_round("evaluating", step_queued=timezone.now() - LONG_AGO)
    results, start = [], threading.Barrier(4)

    def sweep():
        try:
            start.wait()
            results.append(stranded_work_recover())
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(pk for result in results for pk in result["batches_requeued"]) == sorted(lost)
    assert [pk for result in results for pk in result["rounds_requeued"]] == [queued.pk]
    TrainingRound.objects.filter(pk=queued.pk).update(status="cancelled")


def dead_holder() -> str:
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    holder = claims.holder_of(process.pid)
    process.communicate(b"")
    return holder


def test_a_redelivered_step_takes_over_at_once_from_a_holder_whose_process_is_gone(db, tiny_model_dir):
    serving_tiny_policy(tiny_model_dir)
    builtin_prompts_load()
    training_round = a_round("generating", step_claimed=timezone.now(), step_claimed_by=dead_holder(), step_attempts=1)
    assert steps.round_generate(round_id=training_round.pk)
    training_round.refresh_from_db()
    assert training_round.status == "collecting"
    assert Comparison.objects.filter(training_round=training_round).count() == 2
    assert GenerationBatch.objects.filter(training_round=training_round).count() == 1


def test_a_redelivered_step_leaves_a_live_holders_fresh_claim_alone(db, tiny_model_dir):
    serving_tiny_policy(tiny_model_dir)
    builtin_prompts_load()
    training_round = a_round("generating", step_claimed=timezone.now(), step_claimed_by=claims.holder_current())
    assert not steps.round_generate(round_id=training_round.pk)
    assert not GenerationBatch.objects.filter(training_round=training_round).exists()


def test_a_step_whose_workers_died_every_time_fails_the_round_instead_of_running_again(db, tiny_model_dir):
    serving_tiny_policy(tiny_model_dir)
    training_round = a_round("training_reward", step_claimed=timezone.now(), step_claimed_by=dead_holder(),
                             step_attempts=claims.MAX_ATTEMPTS)
    assert not steps.round_train_reward(round_id=training_round.pk)
    training_round.refresh_from_db()
    assert (training_round.status, training_round.failed_status) == ("failed", "training_reward")
    assert "died 3 times" in training_round.error
    assert services.round_retry(round_id=training_round.pk)
    assert TrainingRound.objects.get(pk=training_round.pk).step_attempts == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_lost_chat_turn_sent_again_by_the_sweeper_gets_its_two_replies(celery_worker, tiny_model_dir):
    annotator = make_user("ann", "annotator")
    batch = chat_turn_waiting(serving_tiny_policy(tiny_model_dir), sent_ago=LONG_AGO, annotator=annotator)
    assert stranded_work_recover()["batches_requeued"] == [batch.pk]
    wait_for(lambda: GenerationBatch.objects.get(pk=batch.pk).status == "done", timeout=120,
             message="the worker to write the replies")
    assert chat_state(annotator=annotator, conversation=batch.conversations.get()).phase == ChatState.JUDGING
