"""Prompts: the built-in set, imports from JSONL and CSV, and their all-or-nothing errors."""

import json

import pytest
from django.core.management import CommandError, call_command

from preference_app.core.errors import InvalidInput
from preference_app.core.models import Prompt
from preference_app.core.prompts import BUILTIN_PROMPTS_FILE, builtin_prompts_load, prompts_import


def test_builtin_set_has_at_least_sixty_distinct_prompts_across_categories(db):
    report = builtin_prompts_load()
    assert report.created >= 60
    categories = {prompt.tags[0] for prompt in Prompt.objects.all()}
    assert {"advice", "explanation", "coding", "creative", "refusal-worthy"} <= categories
    assert Prompt.objects.filter(source=Prompt.Source.BUILTIN).count() == report.created


def test_loading_the_builtin_set_twice_adds_nothing_the_second_time(db):
    first = builtin_prompts_load()
    second = builtin_prompts_load()
    assert second.created == 0
    assert second.skipped_duplicates == first.created


def test_jsonl_import_stores_text_and_tags_and_skips_duplicates(db, tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"text": "Why is the sky blue?", "tags": ["science"]}, {"text": "Name three primes."},
            {"text": "Why is the sky blue?"}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    report = prompts_import(path=path)
    assert (report.created, report.skipped_duplicates) == (2, 1)
    assert Prompt.objects.get(text="Why is the sky blue?").tags == ["science"]
    assert Prompt.objects.get(text="Name three primes.").source == Prompt.Source.IMPORTED


def test_csv_import_reads_the_text_column_and_semicolon_tags(db, tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text('text,tags\n"Write a haiku, about rain",creative;short\nWhat is 2+2?,\n')
    report = prompts_import(path=path)
    assert report.created == 2
    assert Prompt.objects.get(text="Write a haiku, about rain").tags == ["creative", "short"]


def test_a_bad_line_names_file_and_line_and_stores_nothing(db, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"txt": "wrong key"}\n')
    with pytest.raises(InvalidInput, match=r"broken.jsonl, line 3"):
        prompts_import(path=path)
    assert Prompt.objects.count() == 0


def test_an_empty_prompt_is_rejected_with_its_line_number(db, tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "   "}\n')
    with pytest.raises(InvalidInput, match=r"line 2: A prompt needs some text"):
        prompts_import(path=path)
    assert Prompt.objects.count() == 0


def test_import_prompts_command_reports_counts(db, tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "Explain recursion."}\n')
    call_command("import_prompts", str(path))
    assert "1 prompts added, 0 duplicates skipped" in capsys.readouterr().out


def test_import_prompts_command_refuses_other_file_types(db, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("Explain recursion.\n")
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command("import_prompts", str(path))


def test_builtin_prompt_file_is_valid_jsonl():
    rows = [json.loads(line) for line in BUILTIN_PROMPTS_FILE.read_text().splitlines() if line.strip()]
    assert all(isinstance(row["text"], str) and row["text"].strip() for row in rows)
