"""Oversized, malformed and mistyped input gets a clear 4xx answer or message, and stores nothing."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from preference_app.api.models import ExportJob
from preference_app.core.models import Conversation, Judgment, Prompt, TrainingRound
from tests.security.conftest import client_for


@pytest.fixture
def api(annotator) -> APIClient:
    client = APIClient()
    client.force_authenticate(annotator)
    return client


def test_an_oversized_prompt_is_refused_with_the_limit_named(api):
    response = api.post("/api/prompts/", {"text": "x" * 8001}, format="json")
    assert response.status_code == 400
    assert "no more than 8000 characters" in json.dumps(response.json())
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("body", [
    {"comparison": "abc", "choice": "a", "strength": 2, "left_candidate": "a"},
    {"comparison": 1, "choice": "a", "strength": "very", "left_candidate": "a"},
    {"comparison": 1, "choice": ["a"], "strength": 2, "left_candidate": "a"},
    {"comparison": 1, "choice": "a", "strength": 9, "left_candidate": "a"},
    {"comparison": 1, "choice": "a", "strength": 2, "left_candidate": "a", "rationale": "x" * 5001},
    {"comparison": 2**70, "choice": "a", "strength": 2, "left_candidate": "a"},
], ids=["id not a number", "strength not a number", "choice a list", "strength off the scale", "rationale too long",
        "id beyond the integer range"])
def test_mistyped_judgments_are_refused(api, world, body):
    response = api.post("/api/judgments/", body, format="json")
    assert 400 <= response.status_code < 500
    assert not Judgment.objects.exists()


def test_a_body_over_the_upload_limit_is_refused(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = api.post("/api/prompts/", {"text": "x" * 20_000}, format="json")
    assert 400 <= response.status_code < 500
    assert not Prompt.objects.exists()


def test_an_oversized_chat_message_is_explained_on_the_page(users):
    response = client_for(users["annotator"]).post("/annotate/chat/", {"text": "x" * 4001})
    assert response.status_code == 200
    assert "at most 4000 characters" in response.content.decode()
    assert not Conversation.objects.filter(source="live_chat").exists()


@pytest.mark.parametrize("command, arguments, name", [
    ("import_prompts", [], "prompts.jsonl"),
    ("import_preferences", ["--format", "hh"], "pairs.jsonl"),
])
def test_an_import_file_over_the_size_limit_is_refused_before_reading(db, tmp_path, settings, command, arguments,
                                                                       name):
    settings.IMPORT_MAX_BYTES = 1000
    path = tmp_path / name
    path.write_text(json.dumps({"text": "x" * 2000}) + "\n")
    with pytest.raises(CommandError, match=r"imports are limited to 0\.0 MB \(IMPORT_MAX_BYTES\)"):
        call_command(command, str(path), *arguments)
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("content", ["\x00\x01binary", "[1, 2, 3]", '{"text": 42}', "not json at all"])
def test_malformed_prompt_files_are_refused_and_store_nothing(db, tmp_path, content):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"text": "A fine prompt."}) + "\n" + content + "\n")
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command("import_prompts", str(path))
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"42", b"null", b"true"])
def test_a_token_request_that_is_not_a_json_object_gets_a_400_not_a_server_error(db, body):
    response = APIClient().post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400
    assert "JSON object" in response.json()["detail"]


NESTED_50K = b"[" * 50_000


@pytest.mark.parametrize("path, role", [
    ("/api/auth/token/", "anonymous"),
    ("/api/prompts/", "annotator"),
    ("/api/judgments/", "annotator"),
    ("/api/rounds/", "admin"),
], ids=["token endpoint, unauthenticated", "prompts", "judgments", "round start"])
def test_fifty_thousand_nested_brackets_get_a_400_with_a_json_error(users, path, role):
    # Before the depth limit, Python's JSON decoder ran out of stack on this body: a server error.
    client = APIClient()
    if users[role] is not None:
        client.force_authenticate(users[role])
    response = client.post(path, NESTED_50K, content_type="application/json")
    assert response.status_code == 400
    assert "nests more than 64 levels" in response.json()["detail"]
    assert not Prompt.objects.exists() and not Judgment.objects.exists()


def test_a_body_nested_just_past_the_limit_is_refused_before_any_serializer_sees_it(api):
    body = {"text": "A prompt.", "tags": ["x"]}
    for _ in range(64):
        body = {"text": "A prompt.", "tags": [body]}
    response = api.post("/api/prompts/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert "nests more than 64 levels" in response.json()["detail"]
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"42", b"null", b"true"])
@pytest.mark.parametrize("path, role", [
    ("/api/prompts/", "annotator"),
    ("/api/judgments/", "annotator"),
    ("/api/rounds/", "admin"),
    ("/api/export-jobs/", "researcher"),
], ids=["prompts", "judgments", "round start", "export job"])
def test_a_body_that_is_not_a_json_object_gets_a_400_and_stores_nothing(users, world, path, role, body):
    client = APIClient()
    client.force_authenticate(users[role])
    rounds_before = TrainingRound.objects.count()
    response = client.post(path, body, content_type="application/json")
    assert response.status_code == 400
    assert isinstance(response.json(), dict)
    assert not Prompt.objects.exists() and not Judgment.objects.exists()
    assert TrainingRound.objects.count() == rounds_before and not ExportJob.objects.exclude(pk=world["job"]).exists()
