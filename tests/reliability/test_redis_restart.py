"""Redis, the task broker, stopped and restarted while annotators submit judgments.

Judgments are written to the database in the request, so a broker outage must lose none of them;
what stops is reply generation, and the live chat must say so instead of answering with an error
page, and generate again once the broker is back.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from preference_app.core import roles
from preference_app.core.generation import GENERATION_UNAVAILABLE
from preference_app.core.models import Candidate, Comparison, Conversation, Judgment, ModelVersion, Turn
from tests.conftest import child_environment, make_user, wait_for
from tests.reliability.conftest import live_app, worker_process

pytestmark = [pytest.mark.fault, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ANNOTATORS = 4
COMPARISON_ID = re.compile(r'data-comparison-id="(\d+)"')
SAVED = "Saved. Here is the next one."
HTMX = {"HX-Request": "true"}


def comparisons_to_judge(model_version, count: int) -> None:
    for number in range(count):
        conversation = Conversation.objects.create(source="prompt")
        Turn.objects.create(conversation=conversation, index=0, role="user", text=f"Question {number}?")
        first, second = (Candidate.objects.create(conversation=conversation, context_length=1, text=text,
                                                  model_version=model_version) for text in ("Yes.", "No."))
        Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=first, candidate_b=second)


def judge_some(sessions, app, rounds: int) -> list[tuple[int, int]]:
    """Each annotator fetches and judges `rounds` comparisons; returns the (user, comparison) acknowledged."""

    def work(item):
        user_id, session = item
        acknowledged = []
        for _ in range(rounds):
            page = session.get(f"{app.url}/annotate/", headers=HTMX, timeout=30)
            assert page.status_code == 200, page.text[:500]
            found = COMPARISON_ID.search(page.text)
            assert found, page.text[:2000]
            comparison_id = int(found.group(1))
            answer = session.post(f"{app.url}/annotate/{comparison_id}/judge/", {"preference": "3"}, headers=HTMX,
                                  timeout=30)
            assert answer.status_code == 200, answer.text[:500]
            if SAVED in answer.text:
                acknowledged.append((user_id, comparison_id))
        return acknowledged

    with ThreadPoolExecutor(len(sessions)) as pool:
        return [pair for result in pool.map(work, sessions) for pair in result]


def chat_page(session, app, conversation_id):
    return session.get(f"{app.url}/annotate/chat/{conversation_id}/", timeout=30).text


def test_judgments_survive_a_broker_restart_and_the_chat_says_when_generation_is_unavailable(
    redis_server, tiny_model_dir
):
    ModelVersion.objects.create(name="base:tiny", kind="policy", path=str(tiny_model_dir), base_model_id="tiny",
                                is_serving=True)
    comparisons_to_judge(ModelVersion.objects.get(), ANNOTATORS * 12)
    users = [make_user(f"ann{number}", roles.ANNOTATOR) for number in range(ANNOTATORS)]
    env = child_environment()
    env.update(REDIS_URL=redis_server.url, CELERY_BROKER_URL=redis_server.url, SECRET_KEY=settings.SECRET_KEY)

    with worker_process(env, name="redis-restart-worker", queues="chat,default,training"), live_app(env, name="redis-restart-web") as app:
        sessions = [(user.pk, app.session_for(user)) for user in users]
        chatter = sessions[0][1]
        acknowledged = judge_some(sessions, app, rounds=3)

        redis_server.stop()
        acknowledged += judge_some(sessions, app, rounds=3)
        sent = chatter.post(f"{app.url}/annotate/chat/", {"text": "Hello while the broker is down?"}, timeout=30)
        assert sent.status_code == 200, sent.text[:500]
        assert GENERATION_UNAVAILABLE in sent.text.replace("&#x27;", "'")
        conversation_id = int(sent.url.rstrip("/").rsplit("/", 1)[1])

        redis_server.start()
        acknowledged += judge_some(sessions, app, rounds=3)
        retried = chatter.post(f"{app.url}/annotate/chat/{conversation_id}/retry/", timeout=30)
        assert retried.status_code == 200, retried.text[:500]
        # The worker reconnects to the restarted broker by itself, takes the new batch and writes two replies.
        wait_for(lambda: 'data-comparison-id="' in chat_page(chatter, app, conversation_id), timeout=90,
                 message="replies after the broker came back")

    stored = list(Judgment.objects.filter(comparison__source="generated").values_list("annotator_id", "comparison_id"))
    assert len(acknowledged) == ANNOTATORS * 9
    assert sorted(stored) == sorted(acknowledged)
