"""RLOO and GRPO: our advantages and losses equal TRL 1.16's trainers' on the same batch (float32, 1e-5 relative).

TRL computes advantages inside `_generate_and_score_completions` and the loss in `_compute_loss`,
so the comparison builds the smallest trainer on a tiny model, replaces its sampling with fixed
token ids (the ones our sampler drew), and runs those two methods; ours run on the same ids.
"""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset

from training.checkpoints import load_causal_lm, save_checkpoint
from training.generate import GenerationConfig, encode_contexts, generate_replies
from training.online import GRPOConfig, train_grpo
from training.rl_losses import grpo_advantages, grpo_loss, rloo_advantages, rloo_loss
from training.rollout import pack_replies, reply_log_probs, to_padded
from training.tiny import build_tiny_causal_lm

trl = pytest.importorskip("trl")

RTOL = 1e-5
K = 3
CONTEXTS = [
    [{"role": "user", "content": "Say hello."}],
    [{"role": "user", "content": "Name a colour."}],
]
SCORES = [0.5, -1.0, 2.0, 0.25, 0.25, 3.0]  # One per reply; each prompt's K replies adjacent.


def _peaked(path, out, *, scale: float = 6.0):
    """A tiny model whose next-token distributions are peaked, so policy and reference disagree."""
    loaded = load_causal_lm(str(path))
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.mul_(scale)
    return save_checkpoint(loaded.model, loaded.tokenizer, out, config={}, metrics={})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("online-parity")
    policy_dir = _peaked(build_tiny_causal_lm(root / "policy-raw", seed=0), root / "policy")
    reference_dir = _peaked(build_tiny_causal_lm(root / "reference-raw", seed=1), root / "reference")
    policy = load_causal_lm(str(policy_dir))
    reference = load_causal_lm(str(reference_dir)).model
    # The policy after an update: near the sampling policy, so some ratios are clipped and some not.
    current = copy.deepcopy(policy.model)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in current.parameters():
            parameter.add_(0.03 * torch.randn(parameter.shape, generator=generator))
    generation = GenerationConfig(candidates_per_context=K, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=0)
    replies = [list(reply.token_ids) for group in generate_replies(policy.model, policy.tokenizer, CONTEXTS, generation)
               for reply in group]
    prompts = [ids for ids in encode_contexts(policy.tokenizer, CONTEXTS, 1024) for _ in range(K)]
    return {"policy_dir": policy_dir, "policy": policy.model, "tokenizer": policy.tokenizer, "reference": reference,
            "current": current, "prompts": prompts, "replies": replies}


def _scripted_reward(prompts, completions, **kwargs):
    return list(SCORES)


def _trl_outputs(trainer_class, config_class, models, tmp_path, *, with_gradient: bool = False, **settings):
    """TRL's advantages and loss on our sampled ids: (generation output, loss under the updated policy).

    With `with_gradient`, the loss's gradient with respect to each policy parameter instead of the loss.
    """
    args = config_class(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(SCORES), num_generations=K,
        max_completion_length=6, report_to="none", use_cpu=True, bf16=False, **settings,
    )
    trainer = trainer_class(
        model=copy.deepcopy(models["policy"]), reward_funcs=_scripted_reward, args=args,
        train_dataset=Dataset.from_list([{"prompt": context} for context in CONTEXTS]),
        processing_class=models["tokenizer"],
    )
    # TRL wraps its own models' forward (fused log-probs), so weights are loaded into them, not swapped.
    trainer.ref_model.load_state_dict(models["reference"].state_dict())
    decoded = models["tokenizer"].batch_decode(models["replies"], skip_special_tokens=True)
    completions = [[{"role": "assistant", "content": text}] for text in decoded]
    if trainer_class is trl.RLOOTrainer:
        trainer._generate = lambda prompts: (models["prompts"], models["replies"], completions)
    else:
        trainer._generate = lambda prompts: (models["prompts"], models["replies"], None, completions, None, {},
                                             None, None)
    inputs = [{"prompt": context} for context in CONTEXTS for _ in range(K)]
    trainer.model.eval()
    with torch.no_grad():
        output = trainer._generate_and_score_completions(inputs)
    trainer.model.load_state_dict(models["current"].state_dict())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # Set by Trainer's training loop, which is not run here.
    loss = trainer._compute_loss(trainer.model, output)
    if not with_gradient:
        return output, loss.item()
    loss.backward()
    return output, {name: parameter.grad.clone() for name, parameter in trainer.model.named_parameters()}


def _our_token_logps(model, models) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pack_replies(models["prompts"], models["replies"])
    with torch.no_grad():
        logps, _ = reply_log_probs(model, batch)
    lengths = [len(reply) for reply in models["replies"]]
    return to_padded(logps, lengths), to_padded(torch.ones(sum(lengths)), lengths)


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor, *, scale: float | None = None):
    """Equal to RTOL relative to each value, or to `scale` where values are differences of larger sums."""
    tolerance = RTOL * (theirs.abs() if scale is None else torch.full_like(theirs, scale)) + 1e-7
    assert ((ours - theirs).abs() <= tolerance).all(), (ours, theirs)


def test_rloo_advantages_and_loss_equal_trls(models, tmp_path):
    beta = 0.05
    output, trl_loss = _trl_outputs(trl.RLOOTrainer, trl.RLOOConfig, models, tmp_path, beta=beta)
    old, mask = _our_token_logps(models["policy"], models)
    reference, _ = _our_token_logps(models["reference"], models)
    current, _ = _our_token_logps(models["current"], models)
    kl = ((old - reference) * mask).sum(1)
    assert kl.abs().mean() > 1.0  # The KL term moves the rewards, so it is compared too.
    advantages = rloo_advantages(torch.tensor(SCORES) - beta * kl, K)
    # An advantage is a difference of rewards that hold beta * summed log-probs: float32 rounds it
    # relative to those sums, so that is the scale of the tolerance.
    scale = beta * (old.abs() + reference.abs()).sum(1).max().item()
    _assert_close(advantages, output["advantages"].cpu(), scale=max(scale, 1.0))
    _assert_close((old * mask).sum(1), output["old_logps"].cpu())
    ours = rloo_loss((current * mask).sum(1), (old * mask).sum(1), output["advantages"].cpu())
    ratios = torch.exp((current * mask).sum(1) - (old * mask).sum(1))
    assert ((ratios - 1).abs() > 0.2).any() and ((ratios - 1).abs() < 0.2).any()  # Both sides of the clip.
    _assert_close(ours.loss, torch.tensor(trl_loss))


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_grpo_advantages_and_loss_equal_trls(models, tmp_path, loss_type):
    beta = 0.04
    # num_iterations=2 makes TRL keep the sampling policy's log-probs, so the ratio is not 1.
    output, trl_loss = _trl_outputs(trl.GRPOTrainer, trl.GRPOConfig, models, tmp_path, beta=beta,
                                    loss_type=loss_type, num_iterations=2)
    advantages = grpo_advantages(torch.tensor(SCORES), K, scale="group")
    _assert_close(advantages, output["advantages"].cpu())
    old, mask = _our_token_logps(models["policy"], models)
    reference, _ = _our_token_logps(models["reference"], models)
    current, _ = _our_token_logps(models["current"], models)
    _assert_close(old, output["old_per_token_logps"].cpu() * mask, scale=old.abs().max().item())
    _assert_close(reference, output["ref_per_token_logps"].cpu() * mask, scale=reference.abs().max().item())
    ours = grpo_loss(current, old, advantages, mask, reference_logps=reference, beta=beta, loss_type=loss_type)
    ratios = torch.exp(current - old)[mask.bool()]
    assert ((ratios - 1).abs() > 0.2).any() and ((ratios - 1).abs() < 0.2).any()
    _assert_close(ours.loss, torch.tensor(trl_loss))


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_grpo_gradient_equals_trls_to_1e_5_relative(models, tmp_path, loss_type):
    # The loss itself nearly cancels (advantages sum to zero within each group, so it is about
    # 2e-6) and can only be compared in absolute terms; its gradient does not cancel: each token
    # pushes its own log-prob by -A * rho / n, so the gradients are compared to 1e-5 relative.
    beta = 0.04
    output, theirs = _trl_outputs(trl.GRPOTrainer, trl.GRPOConfig, models, tmp_path, with_gradient=True, beta=beta,
                                  loss_type=loss_type, num_iterations=2)
    old, mask = _our_token_logps(models["policy"], models)
    reference, _ = _our_token_logps(models["reference"], models)
    current = copy.deepcopy(models["current"]).train()
    lengths = [len(reply) for reply in models["replies"]]
    logps = to_padded(reply_log_probs(current, pack_replies(models["prompts"], models["replies"]))[0], lengths)
    advantages = grpo_advantages(torch.tensor(SCORES), K, scale="group")
    grpo_loss(logps, old, advantages, mask, reference_logps=reference, beta=beta, loss_type=loss_type).loss.backward()
    ours = {name: parameter.grad for name, parameter in current.named_parameters()}
    assert ours.keys() == theirs.keys()
    largest = max(gradient.abs().max().item() for gradient in theirs.values())
    assert largest > 1e-3  # Far from the loss's 2e-6: a gradient that would show a wrong term.
    for name, gradient in theirs.items():
        # Relative to the largest entry of the tensor: entries near zero are sums that cancel.
        torch.testing.assert_close(ours[name], gradient, rtol=RTOL, atol=RTOL * gradient.abs().max().item(),
                                   msg=name)


def test_grpo_advantages_scale_by_group_batch_or_not_at_all():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    group = grpo_advantages(rewards, 3, scale="group")
    torch.testing.assert_close(group[:3], torch.tensor([-1.0, 0.0, 1.0]) / (1.0 + 1e-4))
    torch.testing.assert_close(group[3:], torch.zeros(3))  # A group that agrees teaches nothing.
    torch.testing.assert_close(grpo_advantages(rewards, 3, scale="none"), torch.tensor([-1.0, 0, 1, 0, 0, 0]))
    batch = grpo_advantages(rewards, 3, scale="batch")
    torch.testing.assert_close(batch, torch.tensor([-1.0, 0, 1, 0, 0, 0]) / (rewards.std() + 1e-4))


def test_rloo_baseline_is_the_mean_of_the_other_replies():
    advantages = rloo_advantages(torch.tensor([1.0, 2.0, 6.0]), 3)
    torch.testing.assert_close(advantages, torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5]))
    with pytest.raises(ValueError, match="at least two"):
        rloo_advantages(torch.tensor([1.0]), 1)


def test_grpo_training_runs_and_reports_each_step(models, tmp_path):
    torch.set_num_threads(1)
    config = GRPOConfig(steps=2, prompts_per_step=2, samples_per_prompt=3, max_new_tokens=4, beta=0.04,
                        learning_rate=1e-3, device="cpu", batch_size=4)
    result = train_grpo(policy_path=models["policy_dir"], prompts=CONTEXTS,
                        scorer=lambda contexts, replies: torch.tensor([float(len(r.text)) for r in replies]),
                        config=config, out_dir=tmp_path / "grpo")
    assert [entry["step"] for entry in result.metrics["history"]] == [1, 2]
    for name in ("reward_mean", "kl", "entropy", "clip_fraction", "loss", "reply_length"):
        assert name in result.metrics["history"][-1]
    assert result.checkpoint is not None and result.metrics["stage"] == "grpo"
