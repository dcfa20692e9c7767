"""/api/judgments/: submitting one's own judgments, reading them, filters, ordering and paging."""

from __future__ import annotations

import pytest

from preference_app.api.pseudonyms import annotator_pseudonym
from preference_app.core.models import Judgment
from tests.api.conftest import judge, make_comparison, make_model_version, make_round

VALID = {"choice": "a", "strength": 3, "left_candidate": "b", "rationale": "Clearer.", "flags": ["unsafe"],
         "seconds_spent": 12.5}


@pytest.fixture
def comparison(db):
    return make_comparison()


def post(client, target, **overrides):
    return client.post("/api/judgments/", {"comparison": target.pk, **VALID, **overrides}, format="json")


def test_an_annotator_submits_a_judgment_as_themselves(clients, comparison, annotator):
    response = post(clients["annotator"], comparison)
    assert response.status_code == 201
    stored = Judgment.objects.get()
    assert stored.annotator == annotator and stored.flags == ["unsafe"] and stored.seconds_spent == 12.5
    assert response.data["annotator"] == annotator_pseudonym(annotator.pk)


def test_a_repeated_submit_returns_the_first_judgment(clients, comparison):
    first = post(clients["annotator"], comparison)
    second = post(clients["annotator"], comparison, choice="b", strength=1)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.data["id"] == first.data["id"] and second.data["choice"] == "a"
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"choice": "maybe"},
        {"strength": 0},
        {"strength": 5},
        {"strength": "3.5"},
        {"strength": None},
        {"choice": "tie", "strength": 2},
        {"left_candidate": "c"},
        {"flags": ["boring"]},
        {"flags": "unsafe"},
        {"seconds_spent": -1},
        {"seconds_spent": 1e300},
        {"seconds_spent": "NaN"},
        {"rationale": "x" * 5001},
        {"rationale": "null \x00 byte"},
        {"comparison": 999999},
        {"comparison": 2**70},
        {"comparison": "first"},
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(clients, comparison, overrides):
    response = post(clients["annotator"], comparison, **overrides)
    assert response.status_code == 400
    assert Judgment.objects.count() == 0


def test_a_body_that_is_not_an_object_is_refused(clients, db):
    for body in (b"[1, 2]", b"not json", b'{"comparison": NaN}'):
        response = clients["annotator"].post("/api/judgments/", body, content_type="application/json")
        assert response.status_code == 400


def test_annotators_read_only_their_own_judgments(clients, comparison, annotator, annotators):
    mine = judge(comparison, annotator)
    judge(comparison, annotators[0])
    response = clients["annotator"].get("/api/judgments/")
    assert [row["id"] for row in response.data["results"]] == [mine.pk]
    assert clients["researcher"].get("/api/judgments/").data["count"] == 2


def test_responses_show_pseudonyms_not_user_names(clients, comparison, annotators):
    judge(comparison, annotators[0])
    response = clients["researcher"].get("/api/judgments/")
    assert response.data["results"][0]["annotator"] == annotator_pseudonym(annotators[0].pk)
    assert b"judge0" not in response.content


def test_filters_and_ordering(clients, annotators):
    round_two = make_round(2)
    version = make_model_version()
    in_round = make_comparison(round=round_two, model_versions=(None, version))
    other = make_comparison()
    strong = judge(in_round, annotators[0], "a", 4)
    judge(in_round, annotators[1], "b", 1)
    tie = judge(other, annotators[0], "tie")
    client = clients["researcher"]

    def ids(**params):
        response = client.get("/api/judgments/", params)
        assert response.status_code == 200, response.data
        return [row["id"] for row in response.data["results"]]

    assert len(ids(round=2)) == 2
    assert len(ids(model_version=version.pk)) == 2
    assert ids(min_strength=4) == [strong.pk]
    assert ids(choice="tie") == [tie.pk]
    assert ids(annotator=annotator_pseudonym(annotators[0].pk)) == [strong.pk, tie.pk]
    assert ids(comparison=other.pk) == [tie.pk]
    assert ids(min_agreement=1.0) == [tie.pk]
    assert ids(ordering="-id") == sorted(ids(), reverse=True)
    # Ties have no strength and sort last both ways, on SQLite and PostgreSQL alike.
    assert ids(ordering="strength") == [ids(choice="b")[0], strong.pk, tie.pk]
    assert ids(ordering="-strength") == [strong.pk, ids(choice="b")[0], tie.pk]


def test_pages_have_a_size_the_client_may_choose_up_to_a_limit(clients, annotators):
    for _ in range(3):
        judge(make_comparison(), annotators[0])
    response = clients["researcher"].get("/api/judgments/", {"page_size": 2})
    assert response.data["count"] == 3 and len(response.data["results"]) == 2 and response.data["next"]
    assert clients["researcher"].get("/api/judgments/", {"page": 9}).status_code == 404


@pytest.mark.parametrize(
    "params",
    [{"round": -1}, {"min_strength": 0}, {"choice": "x"}, {"ordering": "password"}, {"min_agreement": "high"}, {"min_agreement": "nan"},
     {"annotator": "ann-\x00"},
     {"created_after": "2025-13-45"}, {"comparison": 2**70}],
)
def test_bad_filters_are_refused(clients, db, params):
    assert clients["researcher"].get("/api/judgments/", params).status_code == 400
