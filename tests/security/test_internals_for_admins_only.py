"""A failed round's traceback and the server's checkpoint paths reach admins through the API, and
nobody else: researchers read the data, not a map of the server."""

from __future__ import annotations

import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from preference_app.api.serializers import ROUND_ERROR_HIDDEN
from preference_app.core.models import ModelVersion, TrainingRound

TRACEBACK = ('FileNotFoundError: /srv/app/var/models/round-3-policy/model.safetensors\n\nTraceback (most recent call '
             'last):\n  File "/srv/app/preference_app/rounds/services.py", line 208, in work\n')


@pytest.fixture
def failed_round(db):
    training_round = TrainingRound.objects.create(
        number=3, status="failed", error=TRACEBACK, config={"seed": 0},
        metrics={"kl_k3": 1.5, "kl_reference_path": "/srv/app/var/models/base", "evaluation_set": {"version": 1}},
    )
    ModelVersion.objects.create(
        name="round-3-policy", kind="policy", path="/srv/app/var/models/round-3-policy", base_model_id="tiny",
        training_round=training_round, config={"beta": 0.1, "reference_path": "/srv/app/var/models/base"},
        metrics={"loss": 0.5, "checkpoints": ["/srv/app/var/models/round-3-policy/step-10"]},
    )
    return training_round


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.mark.parametrize("path", ["/api/rounds/", "/api/rounds/{round}/", "/api/model-versions/",
                                  "/api/model-versions/{version}/"])
def test_a_researcher_reads_rounds_and_versions_without_tracebacks_or_paths(researcher, failed_round, path):
    version = ModelVersion.objects.get()
    response = token_client(researcher).get(path.format(round=failed_round.pk, version=version.pk))
    assert response.status_code == 200
    text = json.dumps(response.json())
    assert "/srv/app" not in text and "Traceback" not in text
    # What describes the model and the round stays.
    assert "kl_k3" in text or "beta" in text


def test_a_researcher_is_told_the_round_failed_without_being_told_where(researcher, failed_round):
    body = token_client(researcher).get(f"/api/rounds/{failed_round.pk}/").json()
    assert (body["status"], body["error"]) == ("failed", ROUND_ERROR_HIDDEN)
    assert body["metrics"] == {"kl_k3": 1.5, "evaluation_set": {"version": 1}}


def test_an_admin_reads_the_traceback_and_the_paths(admin_user, failed_round):
    client = token_client(admin_user)
    round_body = client.get(f"/api/rounds/{failed_round.pk}/").json()
    version_body = client.get("/api/model-versions/").json()["results"][0]
    assert round_body["error"] == TRACEBACK
    assert round_body["metrics"]["kl_reference_path"] == "/srv/app/var/models/base"
    assert version_body["config"]["reference_path"] == "/srv/app/var/models/base"


def test_the_dashboard_shows_a_researcher_that_a_round_failed_but_not_its_traceback(client, researcher, admin_user,
                                                                                   failed_round):
    client.force_login(researcher)
    page = client.get("/rounds/").content.decode()
    assert "Failed; an admin can read why." in page and "Traceback" not in page
    client.force_login(admin_user)
    assert "Traceback (most recent call last)" in client.get("/rounds/").content.decode()
