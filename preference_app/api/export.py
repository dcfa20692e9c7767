"""Exports: what was asked for (`ExportQuery`), its rows as a byte stream, and its dataset card."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from preference_app.api import formats
from preference_app.api.export_selectors import (
    AgreementStatistics,
    flagged_comparison_count,
    judgment_rows_iter,
    preference_pairs,
    preference_pairs_iter,
)
from preference_app.api.filters import PreferenceFilters
from preference_app.api.pseudonyms import annotator_pseudonym
from preference_app.api.votes import judgments_filtered

AGGREGATION_RULE = (
    "Judgments of one comparison are aggregated by majority: the outcome is the choice (A, B, tie, both bad) "
    "that most judgments made, and a tie when two choices are equally common. The margin is the mean strength "
    "(1 = slightly better to 4 = much better) of the judgments that agree with the outcome. Comparisons whose "
    "outcome is a tie or both-bad are left out of pair formats unless ties were asked for (then with margin 0, "
    "candidate A as `chosen`). `min_strength` applies to that margin in pair formats, and to each judgment "
    "in the raw format."
)


@dataclass(frozen=True)
class ExportQuery:
    dataset: str = formats.TRL_CONVERSATIONAL
    file_format: str = formats.JSONL
    with_margin: bool = False
    include_ties: bool = False
    filters: PreferenceFilters = field(default_factory=PreferenceFilters)

    @property
    def data_file_name(self) -> str:
        return f"{self.dataset}.{self.file_format}"

    def to_json(self) -> dict:
        return {**asdict(self), "filters": self.filters.describe()}

    @classmethod
    def from_json(cls, data: dict) -> ExportQuery:
        filters = dict(data.get("filters") or {})
        for name in ("created_after", "created_before"):
            if filters.get(name):
                filters[name] = parse_datetime(filters[name])
        return cls(**{**data, "filters": PreferenceFilters(**filters)})


def _raw_rows(query: ExportQuery) -> Iterator[dict]:
    for row in judgment_rows_iter(filters=query.filters):
        yield {
            "judgment_id": row["judgment_id"],
            "comparison_id": row["comparison_id"],
            "round": row["round"],
            "comparison_source": row["comparison_source"],
            "annotator": annotator_pseudonym(row["annotator_id"]),
            "choice": row["choice"],
            "strength": row["strength"],
            "preferred": row["choice"] if row["choice"] in ("a", "b") else None,
            "left_candidate": row["left_candidate"],
            "seconds_spent": row["seconds_spent"],
            "flags": row["flags"],
            "rationale": row["rationale"],
            "created": row["created"].isoformat(),
            "prompt": row["context"],
            "candidate_a": row["candidate_a"],
            "candidate_b": row["candidate_b"],
            "candidate_a_model_version": row["candidate_a_model_version"],
            "candidate_b_model_version": row["candidate_b_model_version"],
            **{
                f"candidate_{side}_{name}": value
                for side in ("a", "b")
                for name, value in _generation_columns(row, side).items()
            },
        }


def _generation_columns(row: dict, side: str) -> dict:
    """Why a candidate's reply stopped and its length in tokens; null for replies no model wrote."""
    if row[f"candidate_{side}_model_version"] is None:
        return {"stop_reason": None, "tokens": None}
    finished = row[f"candidate_{side}_finished_with_eos"]
    return {"stop_reason": "end_of_turn" if finished else "length", "tokens": row[f"candidate_{side}_tokens"]}


def export_rows(query: ExportQuery) -> Iterator[dict]:
    """The export's rows, one at a time, in the dataset format asked for."""
    if query.dataset == formats.RAW:
        yield from _raw_rows(query)
        return
    for pair in preference_pairs_iter(filters=query.filters, include_ties=query.include_ties):
        yield formats.pair_row(
            query.dataset,
            messages=pair.messages,
            chosen=pair.chosen,
            rejected=pair.rejected,
            margin=pair.margin if query.with_margin else None,
        )


def export_row_count(query: ExportQuery) -> int:
    """How many rows the export has, counted by the database without reading them."""
    if query.dataset == formats.RAW:
        return judgments_filtered(filters=query.filters).count()
    return preference_pairs(filters=query.filters, include_ties=query.include_ties).count()


class RowCounter:
    """Counts rows as they pass, so a card written after the data can state how many there were."""

    def __init__(self, rows: Iterator[dict]):
        self._rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[dict]:
        for row in self._rows:
            self.count += 1
            yield row


def export_chunks(query: ExportQuery, rows: Iterator[dict] | None = None) -> Iterator[bytes]:
    schema = formats.arrow_schema(query.dataset, with_margin=query.with_margin)
    return formats.file_chunks(export_rows(query) if rows is None else rows, file_format=query.file_format, schema=schema)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _flagged_statement(query: ExportQuery) -> str:
    if query.filters.flagged is None:
        return ("Included: comparisons an annotator flagged unsafe or unusable are part of this export "
                "(`include_flagged` was set); the `raw` format's `flags` column says which.")
    if query.filters.flagged:
        return "Only comparisons an annotator flagged unsafe or unusable."
    left_out = flagged_comparison_count(filters=query.filters)
    return (f"Left out: {left_out} judged comparisons that an annotator flagged unsafe or unusable, because a flag "
            "says the pair should not teach a model (training leaves them out too). Export with "
            "`include_flagged=true` (`--include-flagged`) to keep them.")


def dataset_card(
    query: ExportQuery, *, statistics: AgreementStatistics, rows: int | None, generated: datetime | None = None
) -> str:
    """README.md for an export: how to load it, counts, filters, aggregation rule, agreement and date.

    The YAML header lets `datasets.load_dataset(<folder>)` find the data file on its own.
    """
    generated = generated or timezone.now()
    # The flagged filter has its own section below, in words.
    filters = {name: value for name, value in query.filters.describe().items() if name not in ("flagged", "cut_off")}
    filters = filters or {"(none)": "every judgment"}
    loader = "parquet" if query.file_format == formats.PARQUET else query.file_format.replace("jsonl", "json")
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {query.data_file_name}",
        "---",
        "",
        f"# Preference dataset export: {query.dataset} ({query.file_format})",
        "",
        f"Generated {generated.isoformat(timespec='seconds')} by the preference collection app.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'dataset = load_dataset("{loader}", data_files="{query.data_file_name}", split="train")',
        "```",
        "",
        "## Counts",
        "",
        f"- Rows in `{query.data_file_name}`: {'unknown (streamed)' if rows is None else rows}",
        f"- Judged comparisons selected: {statistics.comparisons}",
        f"- Judgments counted: {statistics.judgments}",
        "- Outcomes: " + ", ".join(f"{name} {count}" for name, count in statistics.outcomes.items()),
        "- Choices: " + ", ".join(f"{name} {count}" for name, count in statistics.choices.items()),
        "- Strengths (1 = slightly, 4 = much better): "
        + ", ".join(f"{name}: {count}" for name, count in statistics.strengths.items()),
        "",
        "## Options and filters",
        "",
        f"- Format: `{query.dataset}`, margin column: {'yes' if query.with_margin else 'no'}, "
        f"ties included: {'yes' if query.include_ties else 'no'}",
        "- Replies cut at the model's token limit: "
        + ("left out (`exclude_cut_off`)" if query.filters.cut_off is False else "kept; the `raw` format's "
           "`candidate_a_stop_reason` and `candidate_b_stop_reason` say which (`length`)"),
        *(f"- `{name}`: {value}" for name, value in filters.items()),
        "",
        "## Flagged comparisons",
        "",
        _flagged_statement(query),
        "",
        "## Aggregation",
        "",
        AGGREGATION_RULE,
        "",
        "## Agreement",
        "",
        f"- Comparisons with two or more judgments: {statistics.multiply_judged}",
        f"- Of those, unanimous: {statistics.unanimous}",
        f"- Pairwise agreement (two judgments of one comparison make the same choice): "
        f"{_percent(statistics.pairwise_agreement)}",
        f"- Mean share of judgments agreeing with the majority: {_percent(statistics.mean_majority_agreement)}",
        "",
        "Annotators appear only as stable pseudonyms.",
        "",
    ]
    return "\n".join(lines)
