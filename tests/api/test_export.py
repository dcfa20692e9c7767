"""GET /api/export/: the dataset formats, the aggregation rule, options, filters and file formats."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from preference_app.api.pseudonyms import annotator_pseudonym
from tests.api.conftest import judge, make_comparison, make_model_version, make_round

MULTI_TURN = (("user", "Q1"), ("assistant", "A1"), ("user", "Q2"))


@pytest.fixture
def judged(db, annotators, annotator):
    """Comparisons with known outcomes under the majority rule."""
    first, second, third = annotators
    round_one = make_round(1)
    version = make_model_version("policy-v1")
    decided_a = make_comparison(texts=("A wins", "A loses"), round=round_one, model_versions=(version, None))
    for person, strength in ((first, 3), (second, 3), (third, 4)):
        judge(decided_a, person, "a", strength)
    decided_b = make_comparison(context=MULTI_TURN, texts=("B loses", "B wins"))
    judge(decided_b, first, "b", 2)
    judge(decided_b, second, "b", 4)
    judge(decided_b, third, "a", 1)
    tied = make_comparison(texts=("tie 1", "tie 2"))
    judge(tied, first, "tie")
    split = make_comparison(texts=("split 1", "split 2"))
    judge(split, first, "a", 2)
    judge(split, second, "b", 2)
    both_bad = make_comparison(texts=("bad 1", "bad 2"))
    judge(both_bad, first, "both_bad")
    weak = make_comparison(texts=("weak win", "weak loss"))
    judge(weak, annotator, "a", 1)
    make_comparison(texts=("never judged 1", "never judged 2"))
    return {"decided_a": decided_a, "decided_b": decided_b, "version": version, "annotators": annotators}


def export(client, **params):
    response = client.get("/api/export/", params)
    assert response.status_code == 200, getattr(response, "data", None)
    assert response.streaming
    return response, b"".join(response.streaming_content)


def exported_text(client, **params) -> bytes:
    """The export's body, a Parquet file as the text of its rows, so texts can be looked for in any format."""
    _, body = export(client, **params)
    if params.get("file_format") == "parquet":
        return str(pq.read_table(io.BytesIO(body)).to_pylist()).encode()
    return body


def jsonl(client, **params) -> list[dict]:
    _, body = export(client, **params)
    return [json.loads(line) for line in body.decode().splitlines()]


def test_conversational_rows_keep_the_full_context_and_follow_the_majority(clients, judged):
    rows = jsonl(clients["researcher"], dataset="trl_conversational")
    assert rows == [
        {
            "prompt": [{"role": "user", "content": "Hello?"}],
            "chosen": [{"role": "assistant", "content": "A wins"}],
            "rejected": [{"role": "assistant", "content": "A loses"}],
        },
        {
            "prompt": [{"role": role, "content": text} for role, text in MULTI_TURN],
            "chosen": [{"role": "assistant", "content": "B wins"}],
            "rejected": [{"role": "assistant", "content": "B loses"}],
        },
        {
            "prompt": [{"role": "user", "content": "Hello?"}],
            "chosen": [{"role": "assistant", "content": "weak win"}],
            "rejected": [{"role": "assistant", "content": "weak loss"}],
        },
    ]


def test_standard_rows_are_a_transcript_prompt_continued_by_each_reply(clients, judged):
    rows = jsonl(clients["researcher"], dataset="trl_standard")
    assert rows[1] == {
        "prompt": "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant:",
        "chosen": " B wins",
        "rejected": " B loses",
    }


def test_hh_rows_are_two_full_transcripts(clients, judged):
    rows = jsonl(clients["researcher"], dataset="hh")
    assert rows[0] == {"chosen": "\n\nHuman: Hello?\n\nAssistant: A wins", "rejected": "\n\nHuman: Hello?\n\nAssistant: A loses"}


def test_margin_is_the_mean_strength_of_the_agreeing_judgments(clients, judged):
    rows = jsonl(clients["researcher"], dataset="hh", margin="true")
    assert [row["margin"] for row in rows] == pytest.approx([10 / 3, 3.0, 1.0])


def test_ties_split_votes_and_both_bad_are_kept_with_margin_zero_when_asked(clients, judged):
    rows = jsonl(clients["researcher"], dataset="trl_standard", include_ties="true", margin="true")
    assert [row["chosen"] for row in rows] == [" A wins", " B wins", " tie 1", " split 1", " bad 1", " weak win"]
    assert [row["margin"] for row in rows] == pytest.approx([10 / 3, 3.0, 0.0, 0.0, 0.0, 1.0])


def test_min_strength_drops_the_weakest_pairs_like_bai_et_al(clients, judged):
    rows = jsonl(clients["researcher"], dataset="hh", min_strength=2)
    assert [row["chosen"].rsplit(" ", 2)[-2:] for row in rows] == [["A", "wins"], ["B", "wins"]]


def test_filters_by_round_model_version_annotator_and_agreement(clients, judged):
    client = clients["researcher"]
    assert len(jsonl(client, dataset="hh", round=1)) == 1
    assert len(jsonl(client, dataset="hh", round=99)) == 0
    assert len(jsonl(client, dataset="hh", model_version=judged["version"].pk)) == 1
    # Unanimous comparisons only: decided_a (3 of 3) and weak (1 of 1); decided_b is 2 of 3.
    assert len(jsonl(client, dataset="hh", min_agreement=1.0)) == 2
    assert len(jsonl(client, dataset="hh", min_agreement=0.6)) == 3
    # Counting only the third annotator's votes, decided_b is won by A.
    third = annotator_pseudonym(judged["annotators"][2].pk)
    rows = jsonl(client, dataset="hh", annotator=third)
    assert [row["chosen"].rsplit(" ", 2)[-2:] for row in rows] == [["A", "wins"], ["B", "loses"]]
    assert jsonl(client, dataset="hh", annotator="ann-0000000000000000") == []


def test_date_range_selects_judgments_by_their_creation_time(clients, judged):
    from preference_app.core.models import Judgment

    Judgment.objects.update(created="2024-01-01T00:00:00Z")
    Judgment.objects.filter(comparison=judged["decided_a"]).update(created="2025-06-01T00:00:00Z")
    rows = jsonl(clients["researcher"], dataset="hh", created_after="2025-01-01T00:00:00Z")
    assert len(rows) == 1 and "A wins" in rows[0]["chosen"]
    assert len(jsonl(clients["researcher"], dataset="hh", created_before="2025-01-01T00:00:00Z")) == 2


def test_raw_has_one_row_per_judgment_with_pseudonyms_and_every_field(clients, judged, annotator):
    rows = jsonl(clients["researcher"], dataset="raw")
    assert len(rows) == 11
    first = rows[0]
    assert first["annotator"] == annotator_pseudonym(judged["annotators"][0].pk)
    assert first["round"] == 1 and first["candidate_a_model_version"] == "policy-v1"
    assert first["candidate_b_model_version"] is None
    assert set(first) >= {"choice", "strength", "preferred", "left_candidate", "seconds_spent", "flags", "prompt"}
    tie = next(row for row in rows if row["choice"] == "tie")
    assert tie["strength"] is None and tie["preferred"] is None


def test_annotators_appear_only_as_pseudonyms(clients, judged, annotator):
    _, body = export(clients["researcher"], dataset="raw")
    people = [*judged["annotators"], annotator]
    for user in people:
        assert f'"{user.username}"'.encode() not in body
    rows = [json.loads(line) for line in body.decode().splitlines()]
    assert {row["annotator"] for row in rows} == {annotator_pseudonym(user.pk) for user in people}


@pytest.mark.parametrize("dataset", ["trl_standard", "trl_conversational", "hh", "raw"])
@pytest.mark.parametrize("file_format, loader", [("jsonl", "json"), ("csv", "csv"), ("parquet", "parquet")])
def test_every_format_loads_with_hugging_face_datasets(clients, judged, tmp_path, dataset, file_format, loader):
    from datasets import load_dataset

    response, body = export(clients["researcher"], dataset=dataset, file_format=file_format, margin="true")
    assert response["Content-Disposition"] == f'attachment; filename="{dataset}.{file_format}"'
    path = tmp_path / f"{dataset}.{file_format}"
    path.write_bytes(body)
    loaded = load_dataset(loader, data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == (11 if dataset == "raw" else 3)
    if dataset == "trl_conversational" and file_format != "csv":
        assert loaded[1]["prompt"][2] == {"role": "user", "content": "Q2"}


def test_parquet_keeps_messages_as_nested_lists(clients, judged):
    _, body = export(clients["researcher"], dataset="trl_conversational", file_format="parquet")
    table = pq.read_table(io.BytesIO(body))
    assert table.column("chosen").to_pylist()[0] == [{"role": "assistant", "content": "A wins"}]


def test_an_empty_selection_is_a_valid_empty_file(clients, db):
    _, body = export(clients["researcher"], dataset="trl_conversational", file_format="parquet")
    assert pq.read_table(io.BytesIO(body)).num_rows == 0
    _, body = export(clients["researcher"], dataset="hh", file_format="csv")
    assert body.decode().splitlines() == ["chosen,rejected"]


def test_csv_writes_messages_as_json_text(clients, judged):
    import csv

    _, body = export(clients["researcher"], dataset="trl_conversational", file_format="csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert json.loads(rows[0]["chosen"]) == [{"role": "assistant", "content": "A wins"}]


def test_the_dataset_card_states_counts_filters_agreement_and_date(clients, judged):
    response = clients["researcher"].get("/api/export/card/", {"dataset": "hh", "min_strength": 2, "round": 1})
    assert response.status_code == 200
    card = response.content.decode()
    assert "path: hh.jsonl" in card
    assert "Rows in `hh.jsonl`: 1" in card
    assert "`min_strength`: 2" in card and "`round_number`: 1" in card
    assert "Comparisons with two or more judgments: 1" in card and "unanimous: 1" in card
    assert "Generated 20" in card


def test_agreement_statistics_over_everything(clients, judged):
    card = clients["researcher"].get("/api/export/card/").content.decode()
    # decided_a (3 agree), decided_b (2 of 3), split (1 of 2): 3 multiply judged, one unanimous.
    assert "Comparisons with two or more judgments: 3" in card and "unanimous: 1" in card
    # Agreeing ordered pairs: 6 + 2 + 0 of 6 + 6 + 2.
    assert f"{8 / 14:.1%}" in card


@pytest.mark.parametrize(
    "params",
    [
        {"dataset": "xml"},
        {"file_format": "xlsx"},
        {"min_strength": 9},
        {"min_agreement": 2},
        {"round": "first"},
        {"created_after": "yesterday"},
        {"created_after": "2025-02-01T00:00:00Z", "created_before": "2025-01-01T00:00:00Z"},
        {"margin": "perhaps"},
    ],
)
def test_bad_parameters_are_refused_with_a_reason(clients, db, params):
    for path in ("/api/export/", "/api/export/card/"):
        response = clients["researcher"].get(path, params)
        assert response.status_code == 400
        assert set(response.data) & (set(params) | {"dataset", "file_format", "created_before"})


@pytest.fixture
def flagged(judged, annotators):
    """A decided comparison that one of its two annotators flagged unsafe."""
    first, second, _ = annotators
    comparison = make_comparison(texts=("flagged chosen", "flagged rejected"))
    judge(comparison, first, "a", 4, flags=["unsafe"])
    judge(comparison, second, "a", 3)
    return comparison


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("dataset", ["trl_conversational", "raw"])
def test_flagged_comparisons_are_left_out_of_exports_unless_asked_for(clients, flagged, dataset, file_format):
    default = exported_text(clients["researcher"], dataset=dataset, file_format=file_format)
    included = exported_text(clients["researcher"], dataset=dataset, file_format=file_format, include_flagged="true")
    assert b"flagged chosen" not in default
    assert b"flagged chosen" in included
    assert b"A wins" in default


def test_the_dataset_card_says_how_many_flagged_comparisons_were_left_out_and_why(clients, flagged):
    researcher = clients["researcher"]
    card = researcher.get("/api/export/card/").content.decode()
    assert "Rows in `trl_conversational.jsonl`: 3" in card
    assert "Left out: 1 judged comparisons that an annotator flagged unsafe or unusable" in card
    assert "`include_flagged=true`" in card
    kept = researcher.get("/api/export/card/", {"include_flagged": "true"}).content.decode()
    assert "Rows in `trl_conversational.jsonl`: 4" in kept
    assert "Left out" not in kept


def test_the_export_command_leaves_flagged_comparisons_out_unless_include_flagged(flagged, tmp_path):
    call_command("export_preferences", str(tmp_path / "default"))
    call_command("export_preferences", str(tmp_path / "all"), "--include-flagged")
    assert "flagged chosen" not in (tmp_path / "default" / "trl_conversational.jsonl").read_text()
    assert "Left out: 1 judged comparisons" in (tmp_path / "default" / "README.md").read_text()
    assert "flagged chosen" in (tmp_path / "all" / "trl_conversational.jsonl").read_text()


@pytest.fixture
def cut_off(judged, annotators):
    """A decided comparison whose chosen reply the model did not finish: it hit the token limit."""
    comparison = make_comparison(texts=("cut chosen", "whole rejected"), model_versions=(judged["version"],) * 2)
    comparison.candidate_a.finished_with_eos = False
    comparison.candidate_a.token_count = 96
    comparison.candidate_a.save()
    comparison.candidate_b.token_count = 12
    comparison.candidate_b.save()
    judge(comparison, annotators[0], "a", 3)
    return comparison


def test_raw_rows_say_why_each_reply_stopped_and_how_long_it_was(clients, cut_off):
    rows = [row for row in jsonl(clients["researcher"], dataset="raw") if row["comparison_id"] == cut_off.pk]
    assert [(row["candidate_a_stop_reason"], row["candidate_a_tokens"], row["candidate_b_stop_reason"],
             row["candidate_b_tokens"]) for row in rows] == [("length", 96, "end_of_turn", 12)]
    # A reply no model wrote (here the fixture's candidate B without a model version) has no stop reason.
    no_model = [row for row in jsonl(clients["researcher"], dataset="raw") if row["candidate_b_model_version"] is None]
    assert no_model and {(row["candidate_b_stop_reason"], row["candidate_b_tokens"]) for row in no_model} == {(None, None)}


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("dataset", ["trl_conversational", "raw"])
def test_cut_off_replies_are_kept_unless_the_export_leaves_them_out(clients, cut_off, dataset, file_format):
    default = exported_text(clients["researcher"], dataset=dataset, file_format=file_format)
    whole = exported_text(clients["researcher"], dataset=dataset, file_format=file_format, exclude_cut_off="true")
    assert b"cut chosen" in default
    assert b"cut chosen" not in whole
    assert b"A wins" in whole


def test_the_card_and_the_command_say_whether_cut_off_replies_were_left_out(clients, cut_off, tmp_path):
    kept = clients["researcher"].get("/api/export/card/").content.decode()
    assert "Replies cut at the model's token limit: kept" in kept
    call_command("export_preferences", str(tmp_path / "whole"), "--exclude-cut-off")
    assert "cut chosen" not in (tmp_path / "whole" / "trl_conversational.jsonl").read_text()
    assert "Replies cut at the model's token limit: left out" in (tmp_path / "whole" / "README.md").read_text()
