"""Reading exported JSONL and HH transcripts; encoding with counted truncation; packing."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from training.data import (
    DROP_PROMPT_TOO_LONG,
    DROP_SEQUENCE_TOO_LONG,
    PreferencePair,
    encode_demonstrations,
    encode_pairs,
    hh_pair,
    parse_hh_transcript,
    read_demonstration_jsonl,
    read_preference_jsonl,
)
from training.packing import pack_pairs, sequence_log_probs
from training.transcripts import hh_row_parse


def test_it_reads_trl_conversational_and_standard_preference_records(tmp_path):
    path = tmp_path / "pairs.jsonl"
    records = [
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello"}],
            "rejected": [{"role": "assistant", "content": "Go"}],
            "strength": 2,
        },
        {"prompt": "Q: hi\nA:", "chosen": " hello", "rejected": " go", "margin": 0.5},
    ]
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    conversational, standard = read_preference_jsonl(path)
    assert conversational == PreferencePair([{"role": "user", "content": "Hi"}], "Hello", "Go", margin=2.0)
    assert standard == PreferencePair("Q: hi\nA:", " hello", " go", margin=0.5)


def test_it_names_the_line_of_a_malformed_record(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "x", "chosen": "y"}\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl:1: missing \['rejected'\]"):
        read_preference_jsonl(path)


def test_it_reads_demonstrations_as_messages_or_prompt_completion(tmp_path):
    path = tmp_path / "demos.jsonl"
    path.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
        + "\n"
        + json.dumps({"prompt": [{"role": "user", "content": "Yo"}], "completion": [{"role": "assistant", "content": "Hey"}]})
        + "\n"
    )
    first, second = read_demonstration_jsonl(path)
    assert (first.prompt, first.completion) == ([{"role": "user", "content": "Hi"}], "Hello")
    assert second.completion == "Hey"


def test_hh_prompt_is_the_common_prefix_ending_in_assistant():
    chosen = "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nHuman: Help me?\n\nAssistant: Sure, how?"
    rejected = "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nHuman: Help me?\n\nAssistant: Sorry, no."
    pair = hh_pair(chosen, rejected)
    assert pair.prompt == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Help me?"},
    ]
    assert (pair.chosen, pair.rejected) == ("Sure, how?", "Sorry, no.")


def test_hh_pair_with_identical_replies_keeps_both():
    text = "\n\nHuman: Hi\n\nAssistant: Hello."
    pair = hh_pair(text, text)
    assert (pair.prompt, pair.chosen, pair.rejected) == ([{"role": "user", "content": "Hi"}], "Hello.", "Hello.")


def test_hh_transcript_keeps_text_between_markers():
    assert parse_hh_transcript("\n\nHuman: a\nb\n\nAssistant: c") == [
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "c"},
    ]


def test_the_training_reading_and_the_importers_exact_reading_of_an_hh_row_differ_only_in_whitespace():
    # One parser (training.transcripts) serves both: training strips, the importer keeps every character.
    row = {"chosen": "Be kind.\n\nHuman: Hi \n\nAssistant: Hello.", "rejected": "Be kind.\n\nHuman: Hi \n\nAssistant: Go."}
    trained, stored = hh_row_parse(row, exact=False), hh_row_parse(row, exact=True)
    assert (trained.prompt, trained.chosen, trained.rejected) == ([{"role": "user", "content": "Hi"}], "Hello.", "Go.")
    assert stored.prompt == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi "}]
    assert (stored.chosen, stored.rejected) == ("Hello.", "Go.")


def test_a_trl_record_without_a_prompt_reads_its_shared_messages_as_the_prompt(tmp_path):
    path = tmp_path / "pairs.jsonl"
    record = {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
              "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go"}], "margin": 3}
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "margin": "big"}) + "\n")
    with pytest.raises(ValueError, match=r'pairs.jsonl:2: "margin" must be a number'):
        read_preference_jsonl(path)
    path.write_text(json.dumps(record) + "\n")
    assert read_preference_jsonl(path) == [PreferencePair([{"role": "user", "content": "Hi"}], "Hello", "Go", margin=3.0)]


def test_truncation_and_drops_are_counted_with_their_reason(tokenizer, pairs):
    # Prompts are 33, 53, 34 and 44 tokens; completions up to 19.
    encoded, report = encode_pairs(tokenizer, pairs, max_length=50, overflow="truncate")
    assert (report.total, report.kept, report.truncated) == (4, 3, 1)
    assert report.dropped == {DROP_PROMPT_TOO_LONG: 1}
    assert all(len(pair.chosen_sequence) <= 50 and len(pair.rejected_sequence) <= 50 for pair in encoded)

    _, report = encode_pairs(tokenizer, pairs, max_length=50, overflow="drop")
    assert (report.kept, report.truncated, report.dropped) == (2, 0, {DROP_SEQUENCE_TOO_LONG: 2})
    assert "2/4 kept" in report.summary()


def test_demonstration_completion_is_cut_and_counted(tokenizer, demonstrations):
    encoded, report = encode_demonstrations(tokenizer, demonstrations, max_length=36)
    assert report.truncated == 2 and report.kept == 2
    assert all(len(item.prompt_ids) + len(item.completion_ids) == 36 for item in encoded)


def test_chat_template_completion_ends_with_the_end_of_turn_token(tokenizer, pairs):
    encoded, _ = encode_pairs(tokenizer, pairs[:1], max_length=512)
    assert tokenizer.decode(encoded[0].chosen_ids) == "Hello! How can I help?<|im_end|>\n"


def test_packed_log_probs_equal_a_padded_forward_of_each_sequence(tiny_policy_dir, tokenizer, pairs):
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, dtype=torch.float32)
    encoded, _ = encode_pairs(tokenizer, pairs, max_length=512)
    packed = pack_pairs(encoded, pad_token_id=tokenizer.pad_token_id)
    # The shared prompt is stored once per pair, so the row is shorter than the two sequences.
    assert packed.tokens == sum(pair.tokens for pair in encoded)
    assert packed.tokens < sum(len(p.chosen_sequence) + len(p.rejected_sequence) for p in encoded)
    sums, _ = sequence_log_probs(model, packed)

    sequences = [pair.chosen_sequence for pair in encoded] + [pair.rejected_sequence for pair in encoded]
    prompts = [len(pair.prompt_ids) for pair in encoded] * 2
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id)
    attention_mask = torch.zeros_like(input_ids)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
    with torch.no_grad():
        logps = model(input_ids=input_ids, attention_mask=attention_mask).logits.log_softmax(-1)
    expected = torch.tensor(
        [
            sum(logps[row, position - 1, sequence[position]].item() for position in range(prompts[row], len(sequence)))
            for row, sequence in enumerate(sequences)
        ]
    )
    assert torch.allclose(sums.detach(), expected, rtol=1e-5, atol=1e-4)
