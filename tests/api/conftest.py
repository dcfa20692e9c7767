"""Fixtures of the API tests: clients logged in per role and a small builder of judged comparisons."""

from __future__ import annotations

import itertools

import pytest
from rest_framework.test import APIClient

from preference_app.core import roles
from preference_app.core.models import Candidate, Comparison, Conversation, Judgment, ModelVersion, TrainingRound, Turn
from tests.conftest import make_user

_serial = itertools.count(1)


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def clients(annotator, researcher, admin_user):
    return {
        "anonymous": client_for(None),
        "annotator": client_for(annotator),
        "researcher": client_for(researcher),
        "admin": client_for(admin_user),
    }


@pytest.fixture
def annotators(db):
    """Three more annotators, for comparisons judged by several people."""
    return [make_user(f"judge{number}", roles.ANNOTATOR) for number in range(3)]


def make_comparison(
    context=(("user", "Hello?"),), texts=("Hi.", "Hello there."), *, round=None, model_versions=(None, None), source="generated"
) -> Comparison:
    conversation = Conversation.objects.create(source=Conversation.Source.PROMPT)
    for index, (role, text) in enumerate(context):
        Turn.objects.create(conversation=conversation, index=index, role=role, text=text)
    first, second = (
        Candidate.objects.create(conversation=conversation, context_length=len(context), text=text, model_version=version)
        for text, version in zip(texts, model_versions)
    )
    return Comparison.objects.create(
        conversation=conversation, context_length=len(context), candidate_a=first, candidate_b=second,
        training_round=round, source=source,
    )


def judge(comparison, annotator, choice="a", strength=3, **extra) -> Judgment:
    if choice in ("tie", "both_bad"):
        strength = None
    return Judgment.objects.create(
        comparison=comparison, annotator=annotator, choice=choice, strength=strength, left_candidate="a", **extra
    )


def make_round(number=None) -> TrainingRound:
    return TrainingRound.objects.create(number=number or next(_serial))


def make_model_version(name=None) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name or f"policy-{next(_serial)}", kind=ModelVersion.Kind.POLICY, path="/nowhere", base_model_id="tiny"
    )
