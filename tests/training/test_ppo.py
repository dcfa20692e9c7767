"""PPO: GAE, the clipped losses, KL on the sampled ids, the EOS penalty, the KL controller, and a run that learns."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import PhiConfig, PhiForCausalLM

from training.checkpoints import load_causal_lm, load_tokenizer, save_checkpoint
from training.generate import GenerationConfig
from training.ppo import PPOConfig, train_ppo
from training.rl_losses import (
    AdaptiveKLController,
    clipped_surrogate_loss,
    clipped_value_loss,
    generalized_advantages,
    kl_penalized_rewards,
)
from training.rollout import collect_rollout, penalized_scores
from training.tiny import build_tiny_causal_lm

CONTEXTS = [
    [{"role": "user", "content": "Count to three."}],
    [{"role": "user", "content": "What year is it?"}],
    [{"role": "user", "content": "Give me a number."}],
    [{"role": "user", "content": "Say hello."}],
]
DIGIT_IDS = list(range(32, 42))  # "0" .. "9" in the bundled SmolLM2 tokenizer.


def count_digits(contexts, replies) -> torch.Tensor:
    """A scripted reward through the scorer interface: +1 per digit in the reply's text."""
    return torch.tensor([float(sum(char.isdigit() for char in reply.text)) for reply in replies])


def _digit_policy(out_dir, *, digit_bias: float, eos_bias: float, seed: int = 0):
    """A tiny random Phi (its LM head has a bias) that writes a digit now and then and sometimes ends.

    A random tiny model spreads its probability nearly evenly over 49,152 tokens, so it would write
    a digit about once in 3,500 tokens and no reward would ever be seen; the head's bias on the ten
    digit tokens makes digits a few per cent of tokens, and the one on EOS lets some replies end.
    """
    tokenizer = load_tokenizer(str(build_tiny_causal_lm(out_dir.parent / f"{out_dir.name}-llama", seed=seed)))
    assert tokenizer.convert_ids_to_tokens(DIGIT_IDS) == [str(digit) for digit in range(10)]
    torch.manual_seed(seed)
    config = PhiConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = PhiForCausalLM(config).to(torch.float32)
    with torch.no_grad():
        model.lm_head.bias.zero_()
        model.lm_head.bias[DIGIT_IDS] = digit_bias
        model.lm_head.bias[tokenizer.eos_token_id] = eos_bias
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return save_checkpoint(model, tokenizer, out_dir, config={"tiny_digit_policy": True}, metrics={})


@pytest.fixture(scope="module")
def digit_policy_dir(tmp_path_factory):
    # exp(5.5) * 10 / 49152 is about 5% of tokens a digit; exp(9) / 49152 about 1 in 6 steps an EOS.
    return _digit_policy(tmp_path_factory.mktemp("ppo-models") / "digit-policy", digit_bias=5.5, eos_bias=9.0)


def _brute_force_advantages(rewards, values, lengths, gamma, lam):
    expected = torch.zeros_like(rewards)
    for row, length in enumerate(lengths):
        for t in range(length):
            total = 0.0
            for offset in range(length - t):
                step = t + offset
                next_value = values[row, step + 1].item() if step + 1 < length else 0.0
                delta = rewards[row, step].item() + gamma * next_value - values[row, step].item()
                total += (gamma * lam) ** offset * delta
            expected[row, t] = total
    return expected


def test_gae_equals_brute_force_discounted_sum():
    generator = torch.Generator().manual_seed(0)
    lengths = [7, 1, 4, 6]
    mask = torch.zeros(4, 7)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1.0
    # Padding holds garbage on purpose: it must not leak into any advantage.
    rewards = torch.randn(4, 7, generator=generator)
    values = torch.randn(4, 7, generator=generator)
    for gamma, lam in ((1.0, 0.95), (0.9, 0.5), (0.99, 1.0)):
        advantages, returns = generalized_advantages(rewards, values, mask, gamma=gamma, lam=lam)
        expected = _brute_force_advantages(rewards, values, lengths, gamma, lam)
        torch.testing.assert_close(advantages, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(returns, (expected + values) * mask, rtol=1e-5, atol=1e-6)


def test_clipped_surrogate_matches_hand_computed_cases_at_the_clip_boundaries():
    # (ratio, advantage) -> loss max(-A * rho, -A * clip(rho, 0.8, 1.2)), worked by hand:
    cases = [
        (1.0, 1.0, -1.0, False),   # on-policy: -A
        (1.5, 1.0, -1.2, True),    # ratio above 1 + eps with A > 0: clipped at -1.2 * A
        (1.5, -1.0, 1.5, False),   # ratio above 1 + eps with A < 0: the unclipped, larger loss
        (0.5, -1.0, 0.8, True),    # ratio below 1 - eps with A < 0: clipped at -0.8 * A
        (0.5, 1.0, -0.5, False),   # ratio below 1 - eps with A > 0: unclipped
        # On the boundaries both terms are equal (up to float rounding of exp(log 1.2), which decides
        # whether the token counts as clipped, so it is left out of the count and gradient checks).
        (1.2, 2.0, -2.4, None),
        (0.8, -2.0, 1.6, None),
    ]
    ratios = torch.tensor([[case[0] for case in cases]])
    advantages = torch.tensor([[case[1] for case in cases]])
    old_logps = torch.full_like(ratios, -2.0)
    logps = (old_logps + ratios.log()).requires_grad_()
    mask = torch.ones_like(ratios)
    result = clipped_surrogate_loss(logps, old_logps, advantages, mask, clip=0.2)
    expected = [case[2] for case in cases]
    assert result.loss.item() == pytest.approx(sum(expected) / len(cases), rel=1e-6)
    interior = torch.tensor([[float(case[3] is not None) for case in cases]])
    assert clipped_surrogate_loss(logps, old_logps, advantages, interior, clip=0.2).clip_fraction.item() == (
        pytest.approx(2 / 5))
    result.loss.backward()
    # A clipped token passes no gradient; an unclipped one passes -A * rho / n.
    for index, (ratio, advantage, _, clipped) in enumerate(cases):
        if clipped is None:
            continue
        expected_grad = 0.0 if clipped else -advantage * ratio / len(cases)
        assert logps.grad[0, index].item() == pytest.approx(expected_grad, abs=1e-6)
    # Masked tokens count neither in the sum nor in the mean.
    half = clipped_surrogate_loss(logps.detach(), old_logps, advantages, torch.tensor([[1.0] * 3 + [0.0] * 4]),
                                  clip=0.2)
    assert half.loss.item() == pytest.approx(sum(expected[:3]) / 3, rel=1e-6)


def test_clipped_value_loss_matches_hand_computed_cases():
    # old V = 1, clip 0.2, so V is clipped to [0.8, 1.2]; loss = 1/2 max((V - R)^2, (V_clip - R)^2).
    values = torch.tensor([[1.1, 2.0, 2.0, 0.0, 1.2]])
    returns = torch.tensor([[1.5, 3.0, 0.0, 0.5, 2.0]])
    old_values = torch.ones_like(values)
    expected = [
        0.5 * 0.4**2,  # inside the clip range: (1.1 - 1.5)^2 / 2
        0.5 * 1.8**2,  # V = 2 clipped to 1.2, farther from R = 3: the clipped error wins
        0.5 * 2.0**2,  # V = 2 is farther from R = 0 than 1.2: the unclipped error wins
        0.5 * 0.5**2,  # V = 0 misses R = 0.5 by 0.5, its clip 0.8 by only 0.3: unclipped
        0.5 * 0.8**2,  # exactly on the boundary: equal
    ]
    result = clipped_value_loss(values, old_values, returns, torch.ones_like(values), clip=0.2)
    assert result.loss.item() == pytest.approx(sum(expected) / 5, rel=1e-6)
    assert result.clip_fraction.item() == pytest.approx(1 / 5)


@torch.no_grad()
def _brute_force_log_probs(model, context: list[int], reply: list[int]) -> list[float]:
    log_probs = []
    for position, token in enumerate(reply):
        logits = model(torch.tensor([context + reply[:position]])).logits[0, -1]
        log_probs.append(torch.log_softmax(logits.float(), dim=-1)[token].item())
    return log_probs


def test_kl_per_token_equals_log_pi_minus_log_ref_on_the_sampled_ids(digit_policy_dir, tmp_path):
    policy = load_causal_lm(str(digit_policy_dir))
    reference_dir = _digit_policy(tmp_path / "reference", digit_bias=5.5, eos_bias=9.0, seed=1)
    reference = load_causal_lm(str(reference_dir)).model
    generation = GenerationConfig(candidates_per_context=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=3)
    rollout = collect_rollout(policy=policy.model, reference=reference, tokenizer=policy.tokenizer,
                              contexts=CONTEXTS, generation=generation, scorer=count_digits, batch_size=3)
    assert {bool(done) for done in rollout.finished} == {True, False}
    beta = 0.1
    rewards, kl = kl_penalized_rewards(rollout.scores, rollout.old_logps, rollout.reference_logps, rollout.mask,
                                       beta=beta)
    for row, (context, reply) in enumerate(zip(rollout.prompt_ids, rollout.reply_ids)):
        by_policy = _brute_force_log_probs(policy.model, context, reply)
        by_reference = _brute_force_log_probs(reference, context, reply)
        length = len(reply)
        assert rollout.old_logps[row, :length].tolist() == pytest.approx(by_policy, abs=1e-4)
        assert rollout.reference_logps[row, :length].tolist() == pytest.approx(by_reference, abs=1e-4)
        expected_kl = [pi - ref for pi, ref in zip(by_policy, by_reference)]
        assert kl[row, :length].tolist() == pytest.approx(expected_kl, abs=2e-4)
        assert kl[row, length:].abs().sum().item() == 0.0
        # -beta * KL on every token; the score is added on the last one only.
        expected_rewards = [-beta * value for value in expected_kl]
        expected_rewards[-1] += rollout.scores[row].item()
        assert rewards[row, :length].tolist() == pytest.approx(expected_rewards, abs=1e-4)
    assert kl.abs().sum() > 1.0  # Different models, so a misplaced log-prob would show.


def test_missing_eos_penalty_is_subtracted_only_from_replies_cut_before_eos(digit_policy_dir):
    policy = load_causal_lm(str(digit_policy_dir))
    generation = GenerationConfig(candidates_per_context=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=3)
    rollout = collect_rollout(policy=policy.model, reference=None, tokenizer=policy.tokenizer, contexts=CONTEXTS,
                              generation=generation, scorer=count_digits, batch_size=8)
    penalized = penalized_scores(rollout, 1.5)
    cut = ~rollout.finished
    assert cut.any() and (~cut).any()
    torch.testing.assert_close(penalized[cut], rollout.scores[cut] - 1.5)
    torch.testing.assert_close(penalized[~cut], rollout.scores[~cut])
    assert penalized_scores(rollout, None) is rollout.scores


def test_adaptive_kl_controller_moves_beta_toward_the_target_with_the_error_capped():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert controller.update(12.0, n_steps=10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # error capped at +0.2
    controller = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert controller.update(5.4, n_steps=10) == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    assert controller.update(0.0, n_steps=50) < 0.1 * (1 - 0.1 * 10 / 100)


def test_ppo_raises_a_scripted_reward_while_kl_stays_bounded(digit_policy_dir, tmp_path):
    torch.set_num_threads(1)
    prompts = CONTEXTS * 2
    config = PPOConfig(
        steps=14, prompts_per_step=8, samples_per_prompt=2, max_new_tokens=8, update_epochs=2, mini_batches=2,
        batch_size=16, learning_rate=3e-3, beta=0.05, critic_init="policy", missing_eos_penalty=None,
        value_loss_coef=0.1, device="cpu", seed=0,
    )
    started = time.perf_counter()
    result = train_ppo(policy_path=digit_policy_dir, prompts=prompts, scorer=count_digits, config=config,
                       out_dir=tmp_path / "ppo-policy")
    seconds = time.perf_counter() - started
    history = result.metrics["history"]
    first = sum(entry["reward_mean"] for entry in history[:3]) / 3
    last = sum(entry["reward_mean"] for entry in history[-3:]) / 3
    print(f"PPO outcome: reward {first:.3f} -> {last:.3f}, KL {[round(e['kl'], 2) for e in history]}, {seconds:.1f}s")
    assert len(history) == 14 and result.checkpoint is not None
    for name in ("reward_mean", "kl", "entropy", "clip_fraction", "value_loss", "reply_length"):
        assert all(name in entry for entry in history)
    # At 5% digits a reply of at most 8 tokens starts near 0.3 digits; three steps of 16 replies
    # each average 48 replies, whose mean has a standard error near 0.08. Doubling it is far
    # outside that noise, so the rise is learning, not luck.
    assert last > 2 * first and last - first > 0.3
    # The KL to the starting policy is summed over at most 8 tokens per reply; 8 nats would be
    # about one nat per token, a policy unrecognisable from its start. The penalty keeps it well under.
    assert max(entry["kl"] for entry in history) < 8.0
