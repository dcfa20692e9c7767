"""Fixtures of the security tests: one of everything, and a client per role."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.utils import timezone

from preference_app.annotation.models import Assignment
from preference_app.api.models import ExportJob
from preference_app.core.models import Conversation, Turn
from tests.api.conftest import make_comparison, make_model_version, make_round

ROLES = ("anonymous", "annotator", "researcher", "admin")


@pytest.fixture
def users(annotator, researcher, admin_user):
    return {"anonymous": None, "annotator": annotator, "researcher": researcher, "admin": admin_user}


@pytest.fixture
def world(users, tmp_path) -> dict[str, str]:
    """The ids that fill every URL parameter: objects the annotator works on, a round and a version."""
    annotator = users["annotator"]
    comparison = make_comparison(round=make_round(), model_versions=(make_model_version(), None))
    now = timezone.now()
    Assignment.objects.create(comparison=comparison, annotator=annotator, left_candidate="a", served_at=now,
                              expires_at=now + timezone.timedelta(minutes=10))
    chat = Conversation.objects.create(source=Conversation.Source.LIVE_CHAT, annotator=annotator)
    Turn.objects.create(conversation=chat, index=0, role="user", text="Hello?")
    job = ExportJob.objects.create(id=uuid.uuid4(), requested_by=users["researcher"], options={},
                                   directory=str(tmp_path))
    return {
        "comparison_id": str(comparison.pk), "conversation_id": str(chat.pk), "round_id": str(comparison.training_round_id),
        "version_id": str(comparison.candidate_a.model_version_id), "pk": str(comparison.pk), "job": str(job.pk),
        "action": "cancel", "object_id": str(users["admin"].pk),
    }


def client_for(user, **options) -> Client:
    client = Client(**options)
    if user is not None:
        client.force_login(user)
    return client
