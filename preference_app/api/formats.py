"""Dataset formats and file writers for exports; plain functions with no database access.

Pair formats follow TRL's documented preference formats
(https://huggingface.co/docs/trl/dataset_formats):

- `trl_standard`: {"prompt": str, "chosen": str, "rejected": str}. The prompt is the conversation
  as an Anthropic-style transcript ending in "\\n\\nAssistant:", and each reply continues it with a
  leading space, as TRL's own HH-RLHF preprocessing does.
- `trl_conversational`: {"prompt": [messages], "chosen": [assistant message], "rejected": [...]}
  with messages {"role", "content"}, an explicit prompt.
- `hh`: {"chosen": str, "rejected": str}, both full "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts,
  as in Anthropic's HH-RLHF release.

Each can carry a `margin` column (TRL's RewardTrainer reads it). `raw` has one row per judgment.
Writers turn rows into bytes a batch at a time, so a stream never holds more than one batch.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

# The HH writer lives beside the HH reader, so that a transcript read and written back is the same text.
from training.transcripts import ASSISTANT, hh_transcript

TRL_STANDARD = "trl_standard"
TRL_CONVERSATIONAL = "trl_conversational"
HH = "hh"
RAW = "raw"
DATASET_FORMATS = (TRL_STANDARD, TRL_CONVERSATIONAL, HH, RAW)
PAIR_FORMATS = (TRL_STANDARD, TRL_CONVERSATIONAL, HH)

JSONL = "jsonl"
CSV = "csv"
PARQUET = "parquet"
FILE_FORMATS = (JSONL, CSV, PARQUET)
CONTENT_TYPES = {JSONL: "application/jsonl", CSV: "text/csv", PARQUET: "application/vnd.apache.parquet"}

# Rows per JSONL/CSV chunk and per Parquet row group: large enough for throughput, small enough
# that a stream's memory stays a few megabytes.
BATCH_ROWS = 1000

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_PAIR_SCHEMAS = {
    TRL_STANDARD: [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())],
    TRL_CONVERSATIONAL: [("prompt", _MESSAGES), ("chosen", _MESSAGES), ("rejected", _MESSAGES)],
    HH: [("chosen", pa.string()), ("rejected", pa.string())],
}
RAW_COLUMNS = [
    ("judgment_id", pa.int64()),
    ("comparison_id", pa.int64()),
    ("round", pa.int64()),
    ("comparison_source", pa.string()),
    ("annotator", pa.string()),
    ("choice", pa.string()),
    ("strength", pa.int64()),
    ("preferred", pa.string()),
    ("left_candidate", pa.string()),
    ("seconds_spent", pa.float64()),
    ("flags", pa.list_(pa.string())),
    ("rationale", pa.string()),
    ("created", pa.string()),
    ("prompt", _MESSAGES),
    ("candidate_a", pa.string()),
    ("candidate_b", pa.string()),
    ("candidate_a_model_version", pa.string()),
    ("candidate_b_model_version", pa.string()),
    # end_of_turn, length (cut at the token limit), or null for a reply no model wrote (imported, edited).
    ("candidate_a_stop_reason", pa.string()),
    ("candidate_b_stop_reason", pa.string()),
    ("candidate_a_tokens", pa.int64()),
    ("candidate_b_tokens", pa.int64()),
]


def arrow_schema(dataset: str, *, with_margin: bool = False) -> pa.Schema:
    if dataset == RAW:
        return pa.schema(RAW_COLUMNS)
    columns = list(_PAIR_SCHEMAS[dataset])
    if with_margin:
        columns.append(("margin", pa.float64()))
    return pa.schema(columns)


def pair_row(dataset: str, *, messages: list[dict[str, str]], chosen: str, rejected: str, margin: float | None) -> dict:
    """One pair in a pair format; `margin` None leaves the column out."""
    if dataset == TRL_STANDARD:
        row = {"prompt": hh_transcript(messages) + ASSISTANT, "chosen": f" {chosen}", "rejected": f" {rejected}"}
    elif dataset == TRL_CONVERSATIONAL:
        row = {
            "prompt": messages,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
    elif dataset == HH:
        prompt = hh_transcript(messages) + ASSISTANT
        row = {"chosen": f"{prompt} {chosen}", "rejected": f"{prompt} {rejected}"}
    else:
        raise ValueError(f"{dataset!r} is not a pair format.")
    if margin is not None:
        row["margin"] = margin
    return row


def batched(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def jsonl_chunks(rows: Iterable[dict], *, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    for batch in batched(rows, batch_rows):
        yield "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in batch).encode()


# A spreadsheet opening the CSV runs a cell that starts with one of these as a formula
# (=HYPERLINK(...) sends data away), so such text cells get a leading single quote, as OWASP's
# "CSV Injection" page advises. defusedcsv does the same but leaves tab and carriage return alone and
# rewrites every "|" in such a cell, so the few lines are ours.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """One value as a CSV cell: lists (messages, flags) as JSON text, formula-like text defused.

    Numbers are left as they are: a negative margin is data, and only text comes from people or models.
    """
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


def csv_chunks(rows: Iterable[dict], *, schema: pa.Schema, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(schema.names)
    for batch in batched(rows, batch_rows):
        writer.writerows([csv_cell(row.get(name)) for name in schema.names] for row in batch)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        # Only the header is left when there were no rows at all.
        yield buffer.getvalue().encode()


class _ByteSink(io.RawIOBase):
    """A write-only file that hands back what was written since the last `drain()`."""

    def __init__(self):
        super().__init__()
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def parquet_chunks(rows: Iterable[dict], *, schema: pa.Schema, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    """Parquet written one row group per batch; the footer (row-group index) comes last."""
    sink = _ByteSink()
    writer = pq.ParquetWriter(sink, schema)
    for batch in batched(rows, batch_rows):
        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        yield sink.drain()
    writer.close()
    yield sink.drain()


def file_chunks(rows: Iterable[dict], *, file_format: str, schema: pa.Schema) -> Iterator[bytes]:
    if file_format == JSONL:
        return jsonl_chunks(rows)
    if file_format == CSV:
        return csv_chunks(rows, schema=schema)
    if file_format == PARQUET:
        return parquet_chunks(rows, schema=schema)
    raise ValueError(f"{file_format!r} is not one of {', '.join(FILE_FORMATS)}.")
