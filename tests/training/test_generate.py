"""Batched candidate generation: left padding, K replies per context, EOS handling and seeds."""

import pytest
import torch

from training.checkpoints import load_causal_lm
from training.generate import GenerationConfig, encode_contexts, generate_replies

CONTEXTS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Explain, in a long and careful answer, why the sea is salty."}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))


def test_batched_greedy_replies_equal_one_at_a_time_replies(tiny):
    greedy = GenerationConfig(candidates_per_context=1, temperature=0, max_new_tokens=10)
    batched = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS, greedy)
    singles = [generate_replies(tiny.model, tiny.tokenizer, [context], greedy)[0] for context in CONTEXTS]
    assert [replies[0].text for replies in batched] == [replies[0].text for replies in singles]


def test_k_candidates_come_back_per_context_in_order(tiny):
    config = GenerationConfig(candidates_per_context=3, max_new_tokens=8, batch_size=4)
    replies = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS, config)
    assert [len(context_replies) for context_replies in replies] == [3, 3, 3]
    assert all(0 < reply.token_count <= 8 for context_replies in replies for reply in context_replies)


def test_the_same_seed_gives_the_same_samples_and_another_seed_differs(tiny):
    config = GenerationConfig(candidates_per_context=2, max_new_tokens=12, seed=3)
    first = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS, config)
    again = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS, config)
    other = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS, GenerationConfig(candidates_per_context=2, max_new_tokens=12, seed=4))
    texts = lambda replies: [reply.text for context_replies in replies for reply in context_replies]  # noqa: E731
    assert texts(first) == texts(again)
    assert texts(first) != texts(other)


def test_a_reply_cut_by_the_token_limit_is_marked_unfinished_and_has_no_eos_id(tiny):
    (reply,), = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS[:1],
                                 GenerationConfig(candidates_per_context=1, temperature=0, max_new_tokens=5))
    assert reply.token_count == 5
    assert not reply.finished_with_eos
    assert len(reply.token_ids) == 5
    assert tiny.tokenizer.eos_token_id not in reply.token_ids
    assert tiny.tokenizer.decode(reply.token_ids, skip_special_tokens=True).strip() == reply.text


def test_greedy_token_ids_are_the_argmax_after_the_encoded_context(tiny):
    """The context ids `encode_contexts` gives, truncation included, are the ones the reply continues."""
    config = GenerationConfig(candidates_per_context=1, temperature=0, max_new_tokens=4, max_context_tokens=12)
    (reply,), = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS[1:2], config)
    (context,) = encode_contexts(tiny.tokenizer, CONTEXTS[1:2], config.max_context_tokens)
    assert len(context) == 12
    with torch.no_grad():
        logits = tiny.model(torch.tensor([context + list(reply.token_ids)])).logits[0]  # (T, V)
    assert logits[len(context) - 1 : -1].argmax(-1).tolist() == list(reply.token_ids)


def test_a_reply_that_ends_with_eos_stops_there_and_keeps_the_eos_id_last(tiny):
    eos = tiny.tokenizer.eos_token_id

    def always_eos(module, inputs, logits):
        forced = logits.clone()
        forced[..., eos] = 1e4
        return forced

    hook = tiny.model.lm_head.register_forward_hook(always_eos)
    try:
        (reply,), = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS[:1],
                                     GenerationConfig(candidates_per_context=1, temperature=0, max_new_tokens=5))
    finally:
        hook.remove()
    assert reply.finished_with_eos
    assert (reply.token_count, reply.text) == (0, "")
    assert reply.token_ids == (eos,)


def test_progress_reports_each_rows_text_as_it_grows_and_ends_at_the_whole_work(tiny):
    config = GenerationConfig(candidates_per_context=2, max_new_tokens=12, seed=5, batch_size=4)
    reports = []
    replies = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS, config, on_progress=reports.append,
                               progress_interval=0.0, partial_text=True)
    flat = [reply.text for context_replies in replies for reply in context_replies]
    fractions = [report.fraction for report in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] < 0.5
    assert reports[-1].rows_done == reports[-1].rows_total == 6
    partials = [report.partial for report in reports if report.partial]
    # Every row was reported while it was written, each text a prefix of the reply it became.
    assert set().union(*partials) == set(range(6))
    for partial in partials:
        for row, text in partial.items():
            assert flat[row].startswith(text)
    lengths = [len(partial[0]) for partial in partials if 0 in partial]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1] == len(flat[0])


def test_progress_reports_leave_the_replies_unchanged(tiny):
    config = GenerationConfig(candidates_per_context=2, max_new_tokens=12, seed=5, batch_size=4)
    quiet = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS, config)
    watched = generate_replies(tiny.model, tiny.tokenizer, CONTEXTS, config, on_progress=lambda progress: None,
                               partial_text=True)
    ids = lambda replies: [reply.token_ids for context_replies in replies for reply in context_replies]  # noqa: E731
    assert ids(quiet) == ids(watched)
