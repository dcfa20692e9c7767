"""The fast, in-process half of the fault tests: a broker that refuses a task after the commit, and
a database error in a view, each answered with a clear state instead of an error page."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from kombu.exceptions import OperationalError as BrokerUnavailable

from preference_app.annotation import services as annotation_services
from preference_app.core.generation import GENERATION_UNAVAILABLE
from preference_app.core.middleware import DATABASE_UNAVAILABLE
from preference_app.core.models import GenerationBatch, ModelVersion, TrainingRound
from preference_app.rounds import services as round_services
from preference_app.rounds import tasks as round_tasks
from tests.security.conftest import client_for

pytestmark = pytest.mark.django_db


def refuse(*args, **kwargs):
    raise BrokerUnavailable("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_a_round_whose_next_step_cannot_be_queued_fails_with_the_reason_and_can_be_retried(
    monkeypatch, django_capture_on_commit_callbacks
):
    training_round = TrainingRound.objects.create(number=1, status="collecting")
    monkeypatch.setattr(round_tasks.train_round_reward, "delay", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        assert round_services.round_training_begin(round_id=training_round.pk)
    failed = TrainingRound.objects.get()
    assert (failed.status, failed.failed_status) == ("failed", "training_reward")
    assert "task broker was unreachable" in failed.error

    queued = []
    monkeypatch.setattr(round_tasks.train_round_reward, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        assert round_services.round_retry(round_id=training_round.pk)
    assert queued == [training_round.pk] and TrainingRound.objects.get().status == "training_reward"


def test_a_chat_message_sent_while_the_broker_is_down_says_so_and_keeps_the_message(
    annotator, monkeypatch, django_capture_on_commit_callbacks
):
    from preference_app.core import tasks as core_tasks

    ModelVersion.objects.create(name="base", kind="policy", path="/unused", base_model_id="tiny", is_serving=True)
    # A chat turn is sent with apply_async (to the chat queue), which delay also goes through.
    monkeypatch.setattr(core_tasks.generate_candidates, "apply_async", refuse)
    client = client_for(annotator)
    with django_capture_on_commit_callbacks(execute=True):
        sent = client.post("/annotate/chat/", {"text": "Hello?"})
    assert sent.status_code == 302
    response = client.get(sent["Location"])
    assert GENERATION_UNAVAILABLE in response.content.decode()
    assert GenerationBatch.objects.get().status == "failed"
    assert response.context["state"].turns[0].text == "Hello?"


def test_a_database_error_in_a_submit_answers_503_saying_nothing_was_saved(annotator, monkeypatch):
    def lost_connection(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(annotation_services, "assignment_judge", lost_connection)
    response = client_for(annotator).post("/annotate/1/judge/", {"preference": "3"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 503
    assert response["X-Error-Message"] == DATABASE_UNAVAILABLE
    assert DATABASE_UNAVAILABLE in response.content.decode()
