"""Comparisons to judge, built directly in the database the way generation would leave them."""

from __future__ import annotations

import itertools

import pytest

from preference_app.annotation import chat
from preference_app.core.models import Candidate, Comparison, Conversation, ModelVersion, TrainingRound, Turn

_texts = itertools.count()


def make_comparison(
    *,
    prompt: str = "How do I boil an egg?",
    reply_a: str | None = None,
    reply_b: str | None = None,
    overlap_target: int = 1,
    training_round: TrainingRound | None = None,
    conversation: Conversation | None = None,
) -> Comparison:
    """A one-turn conversation with two candidate replies and the comparison of them."""
    if conversation is None:
        conversation = Conversation.objects.create(source=Conversation.Source.PROMPT)
        Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text=prompt)
    position = conversation.turns.count()
    number = next(_texts)
    first = Candidate.objects.create(
        conversation=conversation, context_length=position, text=reply_a or f"Reply one ({number})."
    )
    second = Candidate.objects.create(
        conversation=conversation, context_length=position, text=reply_b or f"Reply two ({number})."
    )
    return Comparison.objects.create(
        conversation=conversation,
        context_length=position,
        candidate_a=first,
        candidate_b=second,
        overlap_target=overlap_target,
        training_round=training_round,
    )


@pytest.fixture
def comparisons(db):
    """Three comparisons waiting in the queue, oldest first."""
    return [make_comparison(prompt=f"Question {number}?") for number in range(3)]


@pytest.fixture
def tiny_policy(tiny_model_dir, db):
    return ModelVersion.objects.create(
        name="tiny", kind=ModelVersion.Kind.POLICY, path=str(tiny_model_dir), base_model_id="tiny-random", is_serving=True
    )


@pytest.fixture(autouse=True)
def short_chat_replies(monkeypatch):
    """Live-chat replies of a few tokens: the tiny model's text is noise, and each token costs time."""
    monkeypatch.setattr(chat, "CHAT_SAMPLING", {**chat.CHAT_SAMPLING, "max_new_tokens": 6})
