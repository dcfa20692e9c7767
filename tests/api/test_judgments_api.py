"""/api/judgments/ and /api/assignments/next/: leasing and judging as the page does, refusing forged
judgments, reading one's own, filters, ordering and paging."""

from __future__ import annotations

import pytest
from django.utils import timezone

from preference_app.annotation.models import Assignment
from preference_app.api.pseudonyms import annotator_pseudonym
from preference_app.core.models import Judgment
from tests.api.conftest import client_for, judge, make_comparison, make_model_version, make_round

VALID = {"choice": "a", "strength": 3, "rationale": "Clearer.", "flags": ["unsafe"]}


@pytest.fixture
def comparison(db):
    return make_comparison()


def lease(client) -> dict:
    response = client.post("/api/assignments/next/", format="json")
    assert response.status_code == 200, response.content
    return response.data


def post(client, target, **overrides):
    return client.post("/api/judgments/", {"comparison": target.pk, **VALID, **overrides}, format="json")


def test_an_annotator_leases_a_comparison_and_judges_it_as_themselves(clients, comparison, annotator):
    leased = lease(clients["annotator"])
    assert leased["comparison"] == comparison.pk
    assert leased["messages"] == [{"role": "user", "content": "Hello?"}]
    assert (leased["candidate_a"]["text"], leased["candidate_b"]["text"]) == ("Hi.", "Hello there.")
    response = post(clients["annotator"], comparison)
    assert response.status_code == 201
    stored = Judgment.objects.get()
    assert stored.annotator == annotator and stored.flags == ["unsafe"]
    assert response.data["annotator"] == annotator_pseudonym(annotator.pk)
    # Which side was on the left and the time spent come from the lease, not from the client.
    assert stored.left_candidate == leased["left_candidate"]
    assert 0 <= stored.seconds_spent < 60


def test_the_left_side_and_seconds_a_client_sends_are_ignored(clients, comparison):
    leased = lease(clients["annotator"])
    forged_side = "a" if leased["left_candidate"] == "b" else "b"
    assert post(clients["annotator"], comparison, left_candidate=forged_side, seconds_spent=86400).status_code == 201
    stored = Judgment.objects.get()
    assert stored.left_candidate == leased["left_candidate"] and stored.seconds_spent < 60


def test_a_comparison_not_leased_to_the_caller_is_refused_and_nothing_is_stored(clients, comparison, annotators):
    lease(client_for(annotators[0]))  # Leased to someone else.
    response = post(clients["annotator"], comparison)
    assert response.status_code == 400 and "not leased to you" in response.data["detail"]
    assert Judgment.objects.count() == 0


def test_another_annotators_live_chat_comparison_cannot_be_judged_through_the_api(clients, db):
    chat = make_comparison(source="live_chat")
    response = post(clients["annotator"], chat)
    assert response.status_code == 400
    assert Judgment.objects.count() == 0


def test_a_comparison_at_its_overlap_target_is_refused_after_the_lease_lapsed(clients, comparison, annotators):
    lease(clients["annotator"])
    Assignment.objects.update(expires_at=timezone.now())  # The lease lapses ...
    other = client_for(annotators[0])
    lease(other)  # ... someone else takes the comparison and judges it.
    assert post(other, comparison).status_code == 201
    response = post(clients["annotator"], comparison)
    assert response.status_code == 400 and "all the judgments it needs" in response.data["detail"]
    assert Judgment.objects.count() == 1


def test_an_empty_queue_answers_no_content(clients, db):
    assert clients["annotator"].post("/api/assignments/next/", format="json").status_code == 204


def test_a_repeated_submit_returns_the_first_judgment(clients, comparison):
    lease(clients["annotator"])
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
        {"flags": ["boring"]},
        {"flags": "unsafe"},
        {"rationale": "x" * 5001},
        {"rationale": "null \x00 byte"},
        {"comparison": 999999},
        {"comparison": 2**70},
        {"comparison": "first"},
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(clients, comparison, overrides):
    lease(clients["annotator"])
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
