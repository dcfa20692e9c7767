"""Claims on background work: a holder whose process is gone is dead at once, a live one is not,
and a redelivered generation batch takes over from a dead holder instead of waiting."""

import subprocess
import sys
from datetime import timedelta

from django.utils import timezone

from preference_app.core import claims
from preference_app.core.generation import generation_batch_record, generation_batch_run
from preference_app.core.models import Conversation, GenerationBatch, ModelVersion, Turn


def a_finished_process_holder() -> str:
    """The claim holder string of a process on this machine that has since exited."""
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    holder = claims.holder_of(process.pid)
    process.communicate(b"")
    return holder


def test_a_claim_whose_holder_process_on_this_machine_is_gone_is_dead_although_fresh():
    assert claims.claim_is_dead(claimed=timezone.now(), holder=a_finished_process_holder(), now=timezone.now())


def test_a_fresh_claim_of_a_live_holder_is_alive():
    assert not claims.claim_is_dead(claimed=timezone.now(), holder=claims.holder_current(), now=timezone.now())


def test_a_holder_on_another_machine_counts_as_alive_until_its_heartbeat_stops(settings):
    now = timezone.now()
    holder = "another-host:4242:1700000000.00"
    assert not claims.claim_is_dead(claimed=now, holder=holder, now=now)
    stale = now - timedelta(seconds=settings.ROUND_STALL_SECONDS + 1)
    assert claims.claim_is_dead(claimed=stale, holder=holder, now=now)


def test_a_new_process_given_a_dead_holders_pid_does_not_keep_the_claim_alive():
    host, pid, started = claims.holder_current().rsplit(":", 2)
    reused = f"{host}:{pid}:{float(started) - 100:.2f}"
    assert claims.holder_is_gone(reused)


def chat_batch(tiny_model_dir) -> GenerationBatch:
    policy = ModelVersion.objects.create(name="tiny", kind="policy", path=str(tiny_model_dir), base_model_id="tiny",
                                         is_serving=True)
    conversation = Conversation.objects.create(source=Conversation.Source.LIVE_CHAT)
    Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text="Hello?")
    sampling = {"candidates_per_context": 2, "max_new_tokens": 4}
    return generation_batch_record(model_version=policy, conversations=[conversation], sampling=sampling)


def test_a_redelivered_batch_takes_over_at_once_from_a_holder_that_died(db, tiny_model_dir):
    batch = chat_batch(tiny_model_dir)
    GenerationBatch.objects.filter(pk=batch.pk).update(status="running", claimed=timezone.now(),
                                                       claimed_by=a_finished_process_holder(), attempts=1)
    done = generation_batch_run(batch_id=batch.pk)
    assert (done.status, done.candidates_created, done.comparisons_created) == ("done", 2, 1)
    assert GenerationBatch.objects.get(pk=batch.pk).attempts == 2


def test_a_redelivered_batch_leaves_a_live_holders_claim_alone(db, tiny_model_dir):
    batch = chat_batch(tiny_model_dir)
    GenerationBatch.objects.filter(pk=batch.pk).update(status="running", claimed=timezone.now(),
                                                       claimed_by=claims.holder_current())
    assert generation_batch_run(batch_id=batch.pk).status == "running"
    assert GenerationBatch.objects.get(pk=batch.pk).candidates_created == 0


def test_a_batch_whose_workers_died_every_time_is_failed_instead_of_run_again(db, tiny_model_dir):
    batch = chat_batch(tiny_model_dir)
    GenerationBatch.objects.filter(pk=batch.pk).update(status="running", claimed=timezone.now(),
                                                       claimed_by=a_finished_process_holder(),
                                                       attempts=claims.MAX_ATTEMPTS)
    failed = generation_batch_run(batch_id=batch.pk)
    assert failed.status == "failed" and "died 3 times" in failed.error
    assert failed.candidates_created == 0
