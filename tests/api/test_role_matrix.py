"""Every endpoint against every role: anonymous, annotator, researcher, admin."""

from __future__ import annotations

import pytest

from preference_app.api.export import ExportQuery
from preference_app.api.models import ExportJob, ImportJob
from preference_app.api.services import export_write
from preference_app.core.models import Prompt
from tests.api.conftest import judge, make_comparison, make_model_version, make_round

ROLES = ("anonymous", "annotator", "researcher", "admin")


@pytest.fixture
def world(db, annotators, researcher, tmp_path):
    """One of everything, owned by people other than the requesting annotator and admin."""
    comparison = make_comparison(round=make_round(), model_versions=(make_model_version(), None))
    judgment = judge(comparison, annotators[0])
    prompt = Prompt.objects.create(text="Write a haiku.", text_sha256="0" * 64, source=Prompt.Source.BUILTIN)
    query = ExportQuery()
    export_write(query=query, directory=tmp_path)
    job = ExportJob.objects.create(
        requested_by=researcher, options=query.to_json(), status=ExportJob.Status.DONE, directory=str(tmp_path),
        data_file_name=query.data_file_name,
    )
    import_job = ImportJob.objects.create(requested_by=researcher, source_path=str(tmp_path / "pairs.jsonl"),
                                          file_name="pairs.jsonl", file_format="hh", status=ImportJob.Status.DONE)
    return {
        "comparison": comparison.pk,
        "judgment": judgment.pk,
        "prompt": prompt.pk,
        "round": comparison.training_round.pk,
        "model_version": comparison.candidate_a.model_version.pk,
        "job": job.pk,
        "import_job": import_job.pk,
    }


# (method, path template, body, expected status for anonymous, annotator, researcher, admin)
MATRIX = [
    ("get", "/api/prompts/", None, (403, 403, 200, 200)),
    ("post", "/api/prompts/", {"text": "A new prompt."}, (403, 201, 403, 201)),
    ("get", "/api/prompts/{prompt}/", None, (403, 403, 200, 200)),
    ("get", "/api/comparisons/", None, (403, 403, 200, 200)),
    ("get", "/api/comparisons/{comparison}/", None, (403, 403, 200, 200)),
    ("get", "/api/judgments/", None, (403, 200, 200, 200)),
    ("post", "/api/assignments/next/", None, (403, 200, 403, 403)),
    ("post", "/api/judgments/", {"comparison": "{comparison}", "choice": "b", "strength": 2},
     (403, 400, 403, 403)),
    # Another annotator's judgment: hidden from this annotator (404), readable by researchers and admins.
    ("get", "/api/judgments/{judgment}/", None, (403, 404, 200, 200)),
    ("get", "/api/rounds/", None, (403, 403, 200, 200)),
    ("get", "/api/rounds/{round}/", None, (403, 403, 200, 200)),
    ("get", "/api/model-versions/", None, (403, 403, 200, 200)),
    ("get", "/api/model-versions/{model_version}/", None, (403, 403, 200, 200)),
    ("get", "/api/export/", None, (403, 403, 200, 200)),
    ("get", "/api/export/card/", None, (403, 403, 200, 200)),
    ("get", "/api/export-jobs/", None, (403, 403, 200, 200)),
    ("post", "/api/export-jobs/", {"dataset": "hh"}, (403, 403, 202, 202)),
    # The researcher's own job: the admin, not its requester, does not see it.
    ("get", "/api/export-jobs/{job}/", None, (403, 403, 200, 404)),
    ("get", "/api/export-jobs/{job}/data/", None, (403, 403, 200, 404)),
    ("get", "/api/export-jobs/{job}/card/", None, (403, 403, 200, 404)),
    ("get", "/api/import-jobs/", None, (403, 403, 200, 200)),
    # An import is uploaded as multipart; a JSON body is the wrong media type.
    ("post", "/api/import-jobs/", {"file_format": "hh"}, (403, 403, 415, 415)),
    # The researcher's own import, like their export: not shown to the admin through the API.
    ("get", "/api/import-jobs/{import_job}/", None, (403, 403, 200, 404)),
    # It is done, so there is nothing to resume.
    ("post", "/api/import-jobs/{import_job}/resume/", None, (403, 403, 400, 404)),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method, template, body, expected", MATRIX, ids=[f"{m} {t}" for m, t, _, _ in MATRIX])
def test_role_matrix(clients, world, role, method, template, body, expected):
    path = template.format(**world)
    if body is not None:
        body = {key: value.format(**world) if isinstance(value, str) else value for key, value in body.items()}
    response = getattr(clients[role], method)(path, body, format="json") if body else getattr(clients[role], method)(path)
    assert response.status_code == expected[ROLES.index(role)], getattr(response, "data", None)


@pytest.mark.parametrize("path", ["/api/prompts/1/", "/api/export/"])
def test_methods_a_view_does_not_offer_are_refused(clients, path):
    assert clients["admin"].delete(path).status_code == 405


def test_a_token_from_the_token_endpoint_authenticates_scripts(researcher):
    from rest_framework.test import APIClient

    client = APIClient()
    response = client.post("/api/auth/token/", {"username": "res", "password": "correct horse battery"}, format="json")
    assert response.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.data['token']}")
    assert client.get("/api/rounds/").status_code == 200
    # DRF answers 403 rather than 401 because session authentication, listed first, sends no challenge.
    assert APIClient().get("/api/rounds/", HTTP_AUTHORIZATION="Token wrong").status_code == 403


def test_the_browser_session_authenticates_the_browsable_api(client, researcher):
    client.login(username="res", password="correct horse battery")
    response = client.get("/api/rounds/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"Training Round List" in response.content or b"<html" in response.content


@pytest.mark.parametrize("path", ["/api/prompts/", "/api/comparisons/", "/api/judgments/", "/api/rounds/",
                                  "/api/model-versions/"])
def test_ids_beyond_the_integer_range_are_not_found(clients, path):
    assert clients["admin"].get(f"{path}{2**70}/").status_code == 404
