"""The Anthropic HH-RLHF harmless-base test split (or, without ../shared, the bundled sample of it)
parses into conversational pairs."""

from __future__ import annotations

from training.data import encode_pairs, read_hh_jsonl


def test_every_hh_record_parses_into_a_prompt_ending_with_a_user_turn(hh_file):
    path, records = hh_file
    pairs = read_hh_jsonl(path)
    assert len(pairs) == records
    assert all(pair.prompt and pair.prompt[-1]["role"] == "user" for pair in pairs)
    assert all(pair.prompt[0]["role"] == "user" for pair in pairs)
    assert sum(pair.chosen == pair.rejected for pair in pairs) < 50  # "a few pairs have identical completions"


def test_hh_pairs_encode_with_truncation_reported(hh_file, tokenizer):
    pairs = read_hh_jsonl(hh_file[0], limit=200)
    encoded, report = encode_pairs(tokenizer, pairs, max_length=256)
    assert report.total == 200 and report.kept == len(encoded)
    assert report.kept + sum(report.dropped.values()) == 200
    assert report.truncated > 0  # Real transcripts overflow 256 tokens; the report says how many.
