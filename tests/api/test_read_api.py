"""/api/prompts/, /api/comparisons/, /api/rounds/, /api/model-versions/ and the schema."""

from __future__ import annotations

import pytest

from preference_app.api.pseudonyms import annotator_pseudonym
from preference_app.core.models import Prompt
from tests.api.conftest import judge, make_comparison, make_model_version, make_round


def test_an_annotator_adds_a_prompt_once(clients, annotator):
    first = clients["annotator"].post("/api/prompts/", {"text": "  Explain tides.  ", "tags": ["science"]}, format="json")
    again = clients["annotator"].post("/api/prompts/", {"text": "Explain tides."}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    prompt = Prompt.objects.get()
    assert (prompt.text, prompt.source, prompt.tags, prompt.created_by) == ("Explain tides.", "annotator", ["science"],
                                                                             annotator)
    assert first.data["created_by"] == annotator_pseudonym(annotator.pk)


@pytest.mark.parametrize(
    "body", [{}, {"text": ""}, {"text": "   "}, {"text": "x" * 8001}, {"text": "a\x00b"}, {"text": "ok", "tags": "one"},
             {"text": "ok", "tags": [1, {"a": 2}]}, {"text": ["a"]}],
)
def test_bad_prompts_are_refused(clients, db, body):
    assert clients["annotator"].post("/api/prompts/", body, format="json").status_code == 400
    assert not Prompt.objects.exists()


def test_prompts_filter_by_source_and_text(clients, db):
    Prompt.objects.create(text="Tides?", text_sha256="1" * 64, source="builtin")
    Prompt.objects.create(text="Volcanoes?", text_sha256="2" * 64, source="imported")
    client = clients["researcher"]
    assert [row["text"] for row in client.get("/api/prompts/", {"source": "imported"}).data["results"]] == ["Volcanoes?"]
    assert [row["text"] for row in client.get("/api/prompts/", {"search": "tide"}).data["results"]] == ["Tides?"]


def test_a_comparison_shows_context_candidates_votes_outcome_and_agreement(clients, annotators):
    version = make_model_version()
    comparison = make_comparison(
        context=(("user", "Q"), ("assistant", "A"), ("user", "Q2")), round=make_round(7), model_versions=(version, None)
    )
    judge(comparison, annotators[0], "b", 2)
    judge(comparison, annotators[1], "b", 3)
    judge(comparison, annotators[2], "tie")
    data = clients["researcher"].get(f"/api/comparisons/{comparison.pk}/").data
    assert data["round"] == 7 and [m["content"] for m in data["context"]] == ["Q", "A", "Q2"]
    assert data["candidate_a"]["model_version"] == version.pk
    assert data["votes"] == {"a": 0, "b": 2, "tie": 1, "both_bad": 0}
    assert data["outcome"] == "b" and data["agreement"] == pytest.approx(2 / 3)


def test_comparisons_filter_by_agreement_round_and_source(clients, annotators):
    agreed = make_comparison(round=make_round(3))
    judge(agreed, annotators[0], "a")
    disputed = make_comparison(source="live_chat")
    judge(disputed, annotators[0], "a")
    judge(disputed, annotators[1], "b")
    unjudged = make_comparison()
    client = clients["researcher"]

    def ids(**params):
        return [row["id"] for row in client.get("/api/comparisons/", params).data["results"]]

    assert ids() == [agreed.pk, disputed.pk, unjudged.pk]
    assert ids(min_agreement=0.75) == [agreed.pk]
    assert ids(round=3) == [agreed.pk]
    assert ids(source="live_chat") == [disputed.pk]
    assert ids(ordering="-id") == [unjudged.pk, disputed.pk, agreed.pk]
    assert client.get("/api/comparisons/", {}).data["results"][2]["outcome"] is None


def test_rounds_and_model_versions_are_listed_and_filtered(clients, db):
    first = make_round(1)
    make_round(2)
    version = make_model_version("policy-r1")
    version.training_round = first
    version.save()
    client = clients["researcher"]
    assert [row["number"] for row in client.get("/api/rounds/").data["results"]] == [2, 1]
    assert client.get("/api/rounds/", {"status": "failed"}).data["count"] == 0
    rows = client.get("/api/model-versions/", {"round": 1}).data["results"]
    assert [row["name"] for row in rows] == ["policy-r1"] and "path" not in rows[0]
    assert client.get("/api/model-versions/", {"kind": "wizard"}).status_code == 400


def test_the_openapi_schema_and_docs_are_served(clients, db):
    schema = clients["researcher"].get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/judgments/", "/api/export/", "/api/export-jobs/{id}/data/"} <= set(paths)
    assert clients["researcher"].get("/api/docs/").status_code == 200
