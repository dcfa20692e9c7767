"""`manage.py demo_setup` brings a bundled sample of real human preference pairs (Anthropic's
HH-RLHF, MIT licence) into a fresh demo, once, however often it runs."""

import json
from io import StringIO

from django.core.management import call_command

from preference_app.api.models import ImportedPair
from preference_app.core.management.commands.demo_setup import DEMO_PAIRS
from preference_app.core.models import Comparison, Judgment, Prompt


def pair_counts() -> tuple[int, int, int, int]:
    return tuple(model.objects.count() for model in (ImportedPair, Comparison, Judgment, Prompt))


def test_the_bundled_sample_carries_its_licence_and_where_it_came_from():
    folder = DEMO_PAIRS.parent
    assert "MIT License" in (folder / "LICENSE").read_text() and "Anthropic" in (folder / "LICENSE").read_text()
    assert DEMO_PAIRS.name in (folder / "README.md").read_text()
    rows = [json.loads(line) for line in DEMO_PAIRS.read_text().splitlines()]
    assert len(rows) == 200 and all(set(row) == {"chosen", "rejected"} for row in rows)


def test_demo_setup_imports_the_sample_once_and_a_second_run_adds_no_pair(db, settings, tiny_model_dir):
    settings.MODEL_NAME = str(tiny_model_dir)
    call_command("demo_setup", stdout=StringIO(), stderr=StringIO())
    first = pair_counts()
    assert first[0] == 200
    assert Comparison.objects.filter(source=Comparison.Source.IMPORTED).count() == first[0]
    output = StringIO()
    call_command("demo_setup", stdout=output, stderr=StringIO())
    assert pair_counts() == first
    assert "0 pairs imported" in output.getvalue()
