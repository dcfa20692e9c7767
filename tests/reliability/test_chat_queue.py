"""A live chat turn is served while a long batch generation occupies the batch worker: chat turns go
to a queue of their own, which its own worker serves (Procfile, docker-compose.yml)."""

from __future__ import annotations

import time

import pytest
from celery import Celery
from django.conf import settings

from preference_app.core.claims import holder_of
from preference_app.core.generation import generation_batch_record
from preference_app.core.models import Conversation, GenerationBatch, ModelVersion, Turn
from tests.conftest import child_environment, wait_for
from tests.reliability.conftest import live_app, worker_process

pytestmark = [pytest.mark.fault, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Rows (prompts x 2) of long replies: minutes of work for the tiny model, far more than a chat turn.
LONG_BATCH_PROMPTS = 200
LONG_BATCH_TOKENS = 1500


def test_a_chat_turn_is_served_while_a_long_batch_occupies_the_batch_worker(redis_server, tiny_model_dir, annotator):
    policy = ModelVersion.objects.create(name="base:tiny", kind="policy", path=str(tiny_model_dir),
                                         base_model_id="tiny", is_serving=True)
    conversations = []
    for number in range(LONG_BATCH_PROMPTS):
        conversation = Conversation.objects.create(source=Conversation.Source.PROMPT)
        Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text=f"Write at length ({number}).")
        conversations.append(conversation)
    long_batch = generation_batch_record(model_version=policy, conversations=conversations,
                                         sampling={"candidates_per_context": 2, "max_new_tokens": LONG_BATCH_TOKENS})
    env = child_environment()
    env.update(REDIS_URL=redis_server.url, CELERY_BROKER_URL=redis_server.url, SECRET_KEY=settings.SECRET_KEY)
    with worker_process(env, name="batch-worker") as batch_worker, \
            worker_process(env, name="chat-worker", queues="chat") as chat_worker, \
            live_app(env, name="chat-queue-web") as app:
        # Batch work goes to the default queue, as generation_batch_create sends it.
        Celery("batch-sender", broker=redis_server.url, set_as_current=False).send_task(
            "preference_app.core.tasks.generate_candidates", args=[long_batch.pk], queue="default")
        wait_for(lambda: GenerationBatch.objects.get(pk=long_batch.pk).progress > 0, timeout=120,
                 message="the long batch to be writing")

        chatter = app.session_for(annotator)
        asked = time.monotonic()
        sent = chatter.post(f"{app.url}/annotate/chat/", {"text": "Tell me about owls."}, timeout=30)
        assert sent.status_code == 200, sent.text[:500]
        conversation = Conversation.objects.get(source=Conversation.Source.LIVE_CHAT)
        wait_for(lambda: GenerationBatch.objects.get(conversations=conversation).status == "done", timeout=120,
                 message="the chat's two replies")
        chat_seconds = time.monotonic() - asked
        long_now = GenerationBatch.objects.get(pk=long_batch.pk)
        print(f"chat turn served in {chat_seconds:.1f} s while the long batch was {long_now.progress:.0%} done")
        chat_batch = GenerationBatch.objects.get(conversations=conversation)
        assert long_now.status == "running" and long_now.progress < 1
        assert long_now.claimed_by == holder_of(batch_worker.pid)
        assert chat_batch.claimed_by == holder_of(chat_worker.pid)
        assert 'data-comparison-id="' in chatter.get(f"{app.url}/annotate/chat/{conversation.pk}/", timeout=30).text
        # The batch worker would finish the long batch before a warm shutdown: it is not needed any more.
        batch_worker.kill()
