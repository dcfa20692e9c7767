import pytest

from preference_app.core.models import Candidate, Comparison, Conversation, Turn


@pytest.fixture
def comparison(db):
    conversation = Conversation.objects.create(source=Conversation.Source.PROMPT)
    Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text="Hello?")
    first = Candidate.objects.create(conversation=conversation, context_length=1, text="Hi.")
    second = Candidate.objects.create(conversation=conversation, context_length=1, text="Hello there.")
    return Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=first, candidate_b=second)
