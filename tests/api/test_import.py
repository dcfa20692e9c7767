"""Importing HH-RLHF and TRL JSONL: what is stored, duplicates, bad lines, and the round trip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from preference_app.api.models import ImportedPair
from preference_app.api.services import preferences_import
from preference_app.core.models import Candidate, Comparison, Conversation, Judgment, Prompt, Turn
from preference_app.core.services import InvalidInput

REPO_ROOT = Path(__file__).resolve().parents[2]
HH_TEST_SPLIT = REPO_ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"

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
    report = preferences_import(path=write_jsonl(tmp_path / "hh.jsonl", [SINGLE, MULTI]), file_format="hh")
    assert (report.created, report.skipped_duplicates) == (2, 0)
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
    assert comparison.import_record.line == 2


def test_hh_export_gives_back_the_imported_transcripts(clients, tmp_path):
    preferences_import(path=write_jsonl(tmp_path / "hh.jsonl.gz", [SINGLE, MULTI], gzipped=True), file_format="hh")
    assert export_rows(clients["researcher"], dataset="hh") == [SINGLE, MULTI]


def test_duplicates_are_skipped_within_a_file_and_across_imports(db, tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [SINGLE, SINGLE, MULTI])
    first = preferences_import(path=path, file_format="hh")
    counts = stored_counts()
    second = preferences_import(path=path, file_format="hh")
    assert (first.created, first.skipped_duplicates) == (2, 1)
    assert (second.created, second.skipped_duplicates) == (0, 3)
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
def test_a_bad_line_names_file_and_line_and_stores_nothing(db, tmp_path, bad_line, message):
    path = write_jsonl(tmp_path / "broken.jsonl", [SINGLE, MULTI, bad_line])
    with pytest.raises(InvalidInput, match=rf"broken\.jsonl, line 3: .*{message}"):
        preferences_import(path=path, file_format="hh")
    assert stored_counts() == (0,) * 7


def test_a_corrupt_gzip_file_is_refused(db, tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InvalidInput, match="broken.jsonl.gz: cannot be read"):
        preferences_import(path=path, file_format="hh")


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
    with pytest.raises(InvalidInput, match=rf"trl\.jsonl, line 2: .*{message}"):
        preferences_import(path=write_jsonl(tmp_path / "trl.jsonl", [TRL_CONVERSATIONAL, row]), file_format="trl")
    assert stored_counts() == (0,) * 7


def test_the_command_reports_counts_and_errors(db, tmp_path, capsys):
    path = write_jsonl(tmp_path / "hh.jsonl", [SINGLE, SINGLE])
    call_command("import_preferences", str(path), "--format", "hh", "--strength", "3")
    assert "1 pairs imported, 1 duplicates skipped." in capsys.readouterr().out
    assert Judgment.objects.get().strength == 3
    with pytest.raises(CommandError, match=r"Nothing was imported\. bad\.jsonl, line 1"):
        call_command("import_preferences", str(write_jsonl(tmp_path / "bad.jsonl", ["{"])), "--format", "hh")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_preferences", str(tmp_path / "missing.jsonl"), "--format", "hh")


@pytest.mark.slow
def test_the_hh_rlhf_test_split_round_trips_through_import_and_hh_export(clients):
    if not HH_TEST_SPLIT.exists():
        pytest.skip(f"{HH_TEST_SPLIT} is absent: the shared HH-RLHF data is not checked out beside the repository.")
    with gzip.open(HH_TEST_SPLIT, "rt", encoding="utf-8") as lines:
        originals = [json.loads(line) for line in lines if line.strip()]
    report = preferences_import(path=HH_TEST_SPLIT, file_format="hh")
    unique = list({(row["chosen"], row["rejected"]): row for row in originals}.values())
    assert report.created == len(unique) and report.created + report.skipped_duplicates == len(originals) == 2312
    exported = export_rows(clients["researcher"], dataset="hh")
    assert exported == [{"chosen": row["chosen"], "rejected": row["rejected"]} for row in unique]
