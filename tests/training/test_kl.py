"""KL(pi || ref) on the token ids the policy sampled: per-token log-probs, k1 and k3, and their errors."""

from __future__ import annotations

import math

import pytest
import torch

from training.checkpoints import load_causal_lm
from training.evaluate import kl_estimate, kl_to_reference, sample_policy, token_log_probs_on_ids
from training.generate import GeneratedReply, GenerationConfig, encode_contexts, generate_replies
from training.tiny import build_tiny_causal_lm

CONTEXTS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Why is the sea salty?"}],
    [{"role": "user", "content": "Say hello."}],
]
# Temperature 1 and top_p 1 sample from pi itself; 12 context tokens cut every context short.
SAMPLING = GenerationConfig(candidates_per_context=2, temperature=1.0, top_p=1.0, max_new_tokens=5,
                            max_context_tokens=12, seed=0)


def _peaked_and_ending(path, *, scale: float = 12.0, eos_bias: float = 10.0):
    """A tiny model whose next-token distributions are peaked and which ends a reply now and then.

    Scaling the tied embeddings makes two random models disagree by about a nat per token, so a
    log-prob taken at a wrong position would show; an LM-head bias on EOS (about 1/6 per step) gives
    a sample both replies that end with EOS and replies cut at the token limit.
    """
    loaded = load_causal_lm(str(path))
    model = loaded.model
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(scale)
        head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
        head.weight = model.get_output_embeddings().weight  # Still tied to the input embeddings.
        head.bias.zero_()
        head.bias[loaded.tokenizer.eos_token_id] = eos_bias
        model.set_output_embeddings(head)
    return loaded


@torch.no_grad()
def _brute_force_log_probs(model, context: list[int], reply: tuple[int, ...]) -> list[float]:
    """One unbatched, unpadded forward pass of context + prefix per reply token."""
    log_probs = []
    for position, token in enumerate(reply):
        logits = model(torch.tensor([context + list(reply[:position])])).logits[0, -1]  # (V,)
        log_probs.append(torch.log_softmax(logits.float(), dim=-1)[token].item())
    return log_probs


def _stderr(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1)) / math.sqrt(len(values))


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return _peaked_and_ending(tiny_policy_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _peaked_and_ending(build_tiny_causal_lm(tmp_path_factory.mktemp("kl-models") / "reference", seed=1))


@pytest.fixture(scope="module")
def sampled(policy) -> list[GeneratedReply]:
    return [reply for replies in generate_replies(policy.model, policy.tokenizer, CONTEXTS, SAMPLING) for reply in replies]


def test_sampled_token_ids_end_with_the_eos_id_exactly_when_the_reply_ended(policy, sampled):
    eos = policy.tokenizer.eos_token_id
    assert {reply.finished_with_eos for reply in sampled} == {True, False}  # Both kinds, in one batch.
    for reply in sampled:
        assert len(reply.token_ids) == reply.token_count + reply.finished_with_eos
        assert (reply.token_ids[-1] == eos) == reply.finished_with_eos
        assert eos not in reply.token_ids[:-1]


def test_kl_on_sampled_ids_equals_a_brute_force_sum_over_the_same_ids(policy, reference, sampled):
    contexts = [ids for ids in encode_contexts(policy.tokenizer, CONTEXTS, SAMPLING.max_context_tokens) for _ in range(2)]
    replies = [list(reply.token_ids) for reply in sampled]
    policy_logps = token_log_probs_on_ids(policy.model, contexts, replies, batch_size=3)
    reference_logps = token_log_probs_on_ids(reference.model, contexts, replies, batch_size=3)
    estimate, k1, k3 = kl_estimate(policy_logps, reference_logps)

    expected_k1, expected_k3 = [], []
    for context, reply, policy_row, reference_row in zip(contexts, sampled, policy_logps, reference_logps):
        by_policy = _brute_force_log_probs(policy.model, context, reply.token_ids)
        by_reference = _brute_force_log_probs(reference.model, context, reply.token_ids)
        assert policy_row.dtype == torch.float32
        assert policy_row.tolist() == pytest.approx(by_policy, abs=1e-4)
        assert reference_row.tolist() == pytest.approx(by_reference, abs=1e-4)
        log_ratios = [ref - pi for pi, ref in zip(by_policy, by_reference)]
        expected_k1.append(sum(-log_ratio for log_ratio in log_ratios))
        expected_k3.append(sum(math.exp(log_ratio) - 1 - log_ratio for log_ratio in log_ratios))

    assert k1 == pytest.approx(expected_k1, abs=1e-4)
    assert k3 == pytest.approx(expected_k3, abs=1e-4)
    assert estimate.samples == len(sampled)
    assert estimate.k1 == pytest.approx(sum(expected_k1) / len(sampled), abs=1e-4)
    assert estimate.k3 == pytest.approx(sum(expected_k3) / len(sampled), abs=1e-4)
    assert estimate.k1_stderr == pytest.approx(_stderr(expected_k1), abs=1e-4)
    assert estimate.k3_stderr == pytest.approx(_stderr(expected_k3), abs=1e-4)
    assert estimate.k1 > 1.0  # The two models disagree, so a misplaced log-prob would not pass unseen.
    assert min(k3) >= 0.0


def test_one_sample_has_a_standard_error_of_zero():
    estimate, k1, k3 = kl_estimate([torch.tensor([-1.0, -2.0])], [torch.tensor([-1.5, -1.0])])
    assert k1 == pytest.approx([-0.5])
    assert k3 == pytest.approx([(math.exp(-0.5) - 1 + 0.5) + (math.exp(1.0) - 1 - 1.0)])
    assert (estimate.samples, estimate.k1_stderr, estimate.k3_stderr) == (1, 0.0, 0.0)


def test_a_policy_is_at_zero_kl_from_itself(tiny_policy_dir):
    generation = GenerationConfig(temperature=1.0, top_p=1.0, max_new_tokens=4, seed=2)
    replies = sample_policy(policy_path=tiny_policy_dir, contexts=CONTEXTS, generation=generation, device="cpu")
    report = kl_to_reference(
        policy_path=tiny_policy_dir, reference_path=tiny_policy_dir, contexts=CONTEXTS, replies=replies,
        max_context_tokens=generation.max_context_tokens, batch_size=3, device="cpu",
    )
    assert len(replies) == len(CONTEXTS)
    assert report.estimate.samples == len(CONTEXTS)
    assert max(abs(value) for value in report.k1 + report.k3) <= 1e-6
    assert abs(report.estimate.k1) <= 1e-6 and abs(report.estimate.k3) <= 1e-6


def test_replies_without_sampled_ids_are_refused(tiny_policy_dir):
    typed = GeneratedReply(text="Hello.", token_count=2, finished_with_eos=True, seconds=0.0)
    with pytest.raises(ValueError, match="no sampled token ids"):
        kl_to_reference(policy_path=tiny_policy_dir, reference_path=tiny_policy_dir, contexts=CONTEXTS[:1],
                        replies=[typed], max_context_tokens=64, batch_size=1, device="cpu")
