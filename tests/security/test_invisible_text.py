"""Text made only of whitespace and invisible format characters (Unicode Cf) is refused as empty:
str.strip() keeps zero-width characters, so such a prompt or message looked like text to the app
and like nothing to a person."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from preference_app.core.errors import InvalidInput
from preference_app.core.models import Conversation, EvaluationSet, Prompt
from preference_app.core.prompts import prompts_import
from preference_app.core.text import reads_as_blank
from preference_app.rounds.evaluation_sets import evaluation_set_create
from tests.security.conftest import client_for

INVISIBLE = [
    "\u200b",  # Zero-width space.
    "\u200c\u200d",  # Zero-width non-joiner and joiner.
    " \u2060 \n\t",  # Word joiner among whitespace.
    "\ufeff\ufeff",  # Byte-order marks.
    "\u200e\u202e\u2066",  # Direction marks and isolates, also category Cf.
]


@pytest.mark.parametrize("text", INVISIBLE)
def test_a_prompt_of_invisible_characters_is_refused_by_the_api(annotator, text):
    client = APIClient()
    client.force_authenticate(annotator)
    response = client.post("/api/prompts/", {"text": text}, format="json")
    assert response.status_code == 400
    assert "zero-width characters alone are not a prompt" in json.dumps(response.json())
    assert not Prompt.objects.exists()


def test_an_imported_prompt_of_zero_width_spaces_is_refused_with_its_line(db, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"text": "A real prompt."}) + "\n" + json.dumps({"text": "\u200b\u200b"}) + "\n")
    with pytest.raises(InvalidInput, match="prompts.jsonl, line 2: A prompt needs some text: spaces and zero-width"):
        prompts_import(path=path)
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("text", INVISIBLE)
def test_a_chat_message_of_invisible_characters_is_explained_on_the_page(users, text):
    response = client_for(users["annotator"]).post("/annotate/chat/", {"text": text})
    assert response.status_code == 200
    assert "The message is empty: spaces and zero-width characters alone do not count." in response.content.decode()
    assert not Conversation.objects.filter(source="live_chat").exists()


def test_an_evaluation_set_with_an_invisible_prompt_is_refused(db):
    with pytest.raises(InvalidInput, match="Prompt 2 of the evaluation set is empty"):
        evaluation_set_create(name="probe", texts=["A fine prompt.", "\u2060\u200b"])
    assert not EvaluationSet.objects.exists()


def test_text_with_something_visible_is_not_blank_even_beside_zero_width_characters():
    assert reads_as_blank("\u200b \ufeff")
    assert not reads_as_blank("\u200bHi\u200d")
    assert not reads_as_blank("\u3042")  # A letter of another script.
