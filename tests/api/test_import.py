"""Importing HH-RLHF and TRL JSONL: what is stored, duplicates, bad lines, and the round trip."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from preference_app.api.imports import preferences_import
from preference_app.api.models import ImportedPair, ImportJob
from preference_app.core.errors import InvalidInput
from preference_app.core.models import Candidate, Comparison, Conversation, Judgment, Prompt, Turn

REPO_ROOT = Path(__file__).resolve().parents[2]
HH_TEST_SPLIT = REPO_ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
# Its first 200 lines, bundled with the demo: what the round trip reads in a clone with no ../shared beside it.
HH_SAMPLE = REPO_ROOT / "preference_app" / "core" / "demo_data" / "hh-rlhf-harmless-base-sample.jsonl"

SINGLE = {
    "chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
    "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5, probably.",
}
MULTI = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: A pun, then.",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: No.",
}


def write_jsonl(path: Path, rows, *, gzipped=False) -> Path:
    text = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    if gzipped:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def stored_counts() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in (Prompt, Conversation, Turn, Candidate, Comparison, Judgment, ImportedPair))


def export_rows(client, **params) -> list[dict]:
    response = client.get("/api/export/", params)
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def test_hh_pairs_become_prompts_conversations_comparisons_and_judgments(db, tmp_path):
    job = preferences_import(path=write_jsonl(tmp_path / "hh.jsonl", [SINGLE, MULTI]), file_format="hh")
    assert (job.status, job.pairs_stored, job.duplicates_skipped, job.lines_read) == ("done", 2, 0, 2)
    comparison = Comparison.objects.get(conversation__turns__text="Tell me a joke.")
    assert comparison.source == Comparison.Source.IMPORTED and comparison.context_length == 3
    assert [(turn.role, turn.text) for turn in comparison.conversation.turns.order_by("index")] == [
        ("user", "Hi"), ("assistant", "Hello!"), ("user", "Tell me a joke.")
    ]
    assert (comparison.candidate_a.text, comparison.candidate_b.text) == ("A pun, then.", "No.")
    judgment = Judgment.objects.get(comparison=comparison)
    assert (judgment.choice, judgment.strength, judgment.annotator.username) == ("a", 2, "imported-hh")
    assert not judgment.annotator.is_active and not judgment.annotator.has_usable_password()
    assert comparison.conversation.prompt.text == "Hi" and comparison.conversation.prompt.source == "imported"
    assert (comparison.import_record.line, comparison.import_record.job) == (2, job)
    assert comparison.judgment_count == 1


def test_hh_export_gives_back_the_imported_transcripts(clients, tmp_path):
    preferences_import(path=write_jsonl(tmp_path / "hh.jsonl.gz", [SINGLE, MULTI], gzipped=True), file_format="hh")
    assert export_rows(clients["researcher"], dataset="hh") == [SINGLE, MULTI]


def test_duplicates_are_skipped_within_a_file_and_across_imports(db, tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [SINGLE, SINGLE, MULTI])
    first = preferences_import(path=path, file_format="hh")
    counts = stored_counts()
    second = preferences_import(path=path, file_format="hh")
    assert (first.pairs_stored, first.duplicates_skipped) == (2, 1)
    assert (second.pairs_stored, second.duplicates_skipped) == (0, 3)
    assert stored_counts() == counts


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"chosen": "\n\nHuman: x\n\nAssistant: y"}), '"chosen" and "rejected"'),
        (json.dumps({"chosen": "no markers", "rejected": "none here"}), "share no prefix"),
        (json.dumps({"chosen": "\n\nHuman: a\x00\n\nAssistant: b", "rejected": "\n\nHuman: a\x00\n\nAssistant: c"}), "NUL"),
        (json.dumps(["a", "list"]), "expected an object"),
    ],
)
def test_a_bad_line_is_reported_by_file_and_line_and_the_good_lines_are_imported(db, tmp_path, bad_line, message):
    path = write_jsonl(tmp_path / "broken.jsonl", [SINGLE, bad_line, MULTI])
    job = preferences_import(path=path, file_format="hh")
    assert job.status == ImportJob.Status.DONE and (job.pairs_stored, job.lines_skipped) == (2, 1)
    assert len(job.errors) == 1 and re.fullmatch(rf"broken\.jsonl:2: .*{message}.*", job.errors[0])
    assert sorted(ImportedPair.objects.values_list("line", flat=True)) == [1, 3]
    assert stored_counts() == (2, 2, 4, 4, 2, 2, 2)


@pytest.mark.parametrize("options, message", [
    ({"file_format": "csv"}, "format must be one of hh, trl"),
    ({"file_format": "hh", "strength": 5}, "from 1 to 4"),
])
def test_bad_options_are_refused_before_a_job_is_recorded(db, tmp_path, options, message):
    with pytest.raises(InvalidInput, match=message):
        preferences_import(path=write_jsonl(tmp_path / "hh.jsonl", [SINGLE]), **options)
    assert not ImportJob.objects.exists()


def test_a_file_that_is_not_gzip_inside_is_read_as_text_whatever_its_name(db, tmp_path):
    job = preferences_import(path=write_jsonl(tmp_path / "plain.jsonl.gz", [SINGLE]), file_format="hh")
    assert (job.status, job.pairs_stored) == ("done", 1)


def test_a_corrupt_gzip_file_fails_the_job_and_stores_nothing(db, tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(json.dumps(row).encode() for row in [SINGLE, MULTI]))[:-12])
    job = preferences_import(path=path, file_format="hh")
    assert job.status == ImportJob.Status.FAILED and job.error.startswith("broken.jsonl.gz: cannot be read")
    assert stored_counts() == (0, 0, 0, 0, 0, 0, 0)


TRL_CONVERSATIONAL = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
    "chosen": [{"role": "assistant", "content": "Paris."}],
    "rejected": [{"role": "assistant", "content": "Lyon."}],
}


@pytest.mark.parametrize(
    "row, context, chosen, rejected, strength",
    [
        (TRL_CONVERSATIONAL, TRL_CONVERSATIONAL["prompt"], "Paris.", "Lyon.", 2),
        (  # Implicit prompt: the shared leading messages.
            {
                "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
                "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
                "margin": 3.6,
            },
            [{"role": "user", "content": "Hi"}], "Hello!", "Go away.", 4,
        ),
        (
            {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello!", "rejected": " Bye.", "margin": 1},
            [{"role": "user", "content": "Hi"}], "Hello!", "Bye.", 1,
        ),
        (
            {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
            [{"role": "user", "content": "The sky is"}], "blue.", "green.", 2,
        ),
    ],
    ids=["conversational", "implicit-prompt-with-margin", "standard-transcript", "standard-plain"],
)
def test_trl_rows_of_every_kind_are_imported(db, tmp_path, row, context, chosen, rejected, strength):
    preferences_import(path=write_jsonl(tmp_path / "trl.jsonl", [row]), file_format="trl")
    comparison = Comparison.objects.get()
    stored = [{"role": turn.role, "content": turn.text} for turn in comparison.conversation.turns.order_by("index")]
    assert stored == context
    assert (comparison.candidate_a.text, comparison.candidate_b.text) == (chosen, rejected)
    assert comparison.judgments.get().strength == strength


def test_trl_conversational_export_gives_back_the_imported_rows(clients, tmp_path):
    preferences_import(path=write_jsonl(tmp_path / "trl.jsonl", [TRL_CONVERSATIONAL]), file_format="trl")
    assert export_rows(clients["researcher"], dataset="trl_conversational") == [TRL_CONVERSATIONAL]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "wizard", "content": "y"}],
          "rejected": [{"role": "assistant", "content": "z"}]}, "role system, user or assistant"),
        ({"prompt": [{"role": "user", "content": "x"}], "chosen": [], "rejected": [{"role": "assistant", "content": "z"}]},
         "exactly one assistant message"),
        ({"prompt": "x", "chosen": " y", "rejected": " z", "margin": "big"}, '"margin" must be a number'),
        ({"prompt": "x", "chosen": ["y"], "rejected": " z"}, "list of"),
        ({"prompt": 3, "chosen": " y", "rejected": " z"}, '"prompt" must be a non-empty string'),
    ],
)
def test_bad_trl_rows_are_refused(db, tmp_path, row, message):
    job = preferences_import(path=write_jsonl(tmp_path / "trl.jsonl", [TRL_CONVERSATIONAL, row]), file_format="trl")
    assert len(job.errors) == 1 and re.fullmatch(rf"trl\.jsonl:2: .*{message}.*", job.errors[0])
    assert list(ImportedPair.objects.values_list("line", flat=True)) == [1]


def test_the_command_reports_counts_and_errors(db, tmp_path, capsys):
    path = write_jsonl(tmp_path / "hh.jsonl", [SINGLE, SINGLE, "{"])
    call_command("import_preferences", str(path), "--format", "hh", "--strength", "3")
    output = capsys.readouterr()
    assert "1 pairs imported, 1 duplicates skipped, 1 bad lines skipped." in output.out
    assert "hh.jsonl:3: not valid JSON" in output.err
    assert Judgment.objects.get().strength == 3
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_preferences", str(tmp_path / "missing.jsonl"), "--format", "hh")
    with pytest.raises(CommandError, match="strength"):
        call_command("import_preferences", str(path), "--format", "hh", "--strength", "7")


@pytest.mark.slow
def test_the_hh_rlhf_test_split_round_trips_through_import_and_hh_export(clients):
    path, records = (HH_TEST_SPLIT, 2312) if HH_TEST_SPLIT.exists() else (HH_SAMPLE, 200)
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as lines:
        originals = [json.loads(line) for line in lines if line.strip()]
    job = preferences_import(path=path, file_format="hh")
    unique = list({(row["chosen"], row["rejected"]): row for row in originals}.values())
    assert job.pairs_stored == len(unique) and job.pairs_stored + job.duplicates_skipped == len(originals) == records
    exported = export_rows(clients["researcher"], dataset="hh")
    assert exported == [{"chosen": row["chosen"], "rejected": row["rejected"]} for row in unique]
