"""PPO with a reward model (the seed's step 3 as taught; Ziegler et al. 2019, Ouyang et al. 2022).

Each step samples replies from the policy (training.rollout), scores them with the frozen reward
model, and turns each reply into per-token rewards: -beta * (log pi - log ref) on every sampled
token plus the score on its last one. A critic (a one-output sequence-classification model, by
default a copy of the reward model) gives V(x, y_<t) for every token; GAE turns rewards and values
into advantages; then `update_epochs` passes over the rollout in `mini_batches` minibatches update
the policy with the clipped surrogate and the critic with the clipped value loss.

Where the implementation details of Huang et al. 2024 ("The N Implementation Details of RLHF with
PPO") live:
    sampling at temperature 1 from pi itself             OnlineConfig.temperature / top_p
    EOS trick: penalise replies cut before EOS           rollout.penalized_scores, missing_eos_penalty
    per-token KL penalty, score on the last token        rl_losses.kl_penalized_rewards
    reward whitening (scale only)                        rl_losses.masked_whiten(shift_mean=False), whiten_rewards
    GAE, then advantage whitening over the rollout       rl_losses.generalized_advantages, masked_whiten
    clipped surrogate; clipped value loss                rl_losses.clipped_surrogate_loss, clipped_value_loss
    value head initialised from the reward model         PPOConfig.critic_init
    dropout off (the models run in eval mode throughout) train_ppo
    Adam epsilon 1e-5                                    OnlineConfig.adam_epsilon
    adaptive KL controller                               rl_losses.AdaptiveKLController, adaptive_kl
    several epochs over shuffled minibatches             OnlineConfig.update_epochs, mini_batches
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch

from training import distributed
from training.checkpoints import load_reward_model, save_checkpoint
from training.distributed import DataParallel, shard
from training.optim import Progress, TrainingResult, autocast_for, resolve_device
from training.packing import packed_attention
from training.reward_probe import is_probe_checkpoint
from training.rl_losses import (
    AdaptiveKLController,
    ClippedLoss,
    clipped_surrogate_loss,
    clipped_value_loss,
    generalized_advantages,
    kl_penalized_rewards,
    masked_whiten,
)
from training.rollout import (
    Message,
    OnlineConfig,
    Rollout,
    Scorer,
    collect_rollout,
    context_report,
    gather_rollout,
    load_online_models,
    make_optimizer,
    minibatch_indices,
    optimizer_step,
    pack_replies,
    penalized_scores,
    prompt_batches,
    reply_log_probs,
    reply_values,
    to_padded,
)
from training.runtime import set_seed


@dataclass
class PPOConfig(OnlineConfig):
    """PPO settings (sampling, batching and optimiser settings are in OnlineConfig)."""

    learning_rate: float = 3e-6
    update_epochs: int = 4  # PPO epochs over each rollout.
    mini_batches: int = 4  # Minibatches per PPO epoch.
    clip_range: float = 0.2  # eps of the clipped surrogate (Schulman et al. 2017 eq. 7).
    value_clip_range: float = 0.2  # eps of the clipped value loss.
    value_loss_coef: float = 0.1  # Weight of the value loss in the summed loss (TRL's vf_coef).
    gamma: float = 1.0  # Discount; 1 because the only non-KL reward comes at the end of a reply.
    lam: float = 0.95  # GAE lambda (Schulman et al. 2016).
    missing_eos_penalty: float | None = 1.0
    whiten_rewards: bool = False  # Rescale per-token rewards to unit variance over the rollout.
    whiten_advantages: bool = True  # Zero mean, unit variance advantages over the rollout.
    adaptive_kl: bool = False  # Adjust beta toward target_kl (Ziegler et al. 2019).
    target_kl: float = 6.0  # Target KL(pi || ref) per reply, in nats, for the adaptive controller.
    kl_horizon: int = 10_000  # Controller horizon in replies: how slowly beta follows the error.
    # "reward": the critic starts as a copy of the reward model (needs reward_path); "policy": from
    # the policy checkpoint with a fresh scalar head.
    critic_init: Literal["reward", "policy"] = "reward"


def _critic(policy_path, reward_path, config: PPOConfig, device) -> torch.nn.Module:
    if config.critic_init == "reward":
        if reward_path is None:
            raise ValueError("critic_init='reward' needs reward_path; use critic_init='policy' with a scripted scorer.")
        if not is_probe_checkpoint(reward_path):
            return load_reward_model(str(reward_path), device=device).model
        # A linear-probe reward model reads half the layers and pools the whole reply, so it cannot
        # give the per-token values a critic needs; the critic starts from the policy instead.
    if config.critic_init in ("policy", "reward"):
        return load_reward_model(str(policy_path), device=device).model
    raise ValueError(f"critic_init must be 'reward' or 'policy', not {config.critic_init!r}.")


@torch.no_grad()
def _rollout_values(critic, prompt_ids, reply_ids, *, batch_size: int, device) -> torch.Tensor:
    """V(x, y_<t) of every sampled token under the critic at rollout time: (B, T)."""
    parts = []
    for start in range(0, len(reply_ids), batch_size):
        batch = pack_replies(prompt_ids[start : start + batch_size], reply_ids[start : start + batch_size])
        parts.append(reply_values(critic, batch.to(device)).cpu())
    return to_padded(torch.cat(parts), [len(ids) for ids in reply_ids])


def _rows(tensor: torch.Tensor, rows: torch.Tensor, lengths: list[int], device) -> torch.Tensor:
    """The given rows of a (B, T) rollout tensor, cut to the longest of their replies: (b, max(lengths))."""
    return tensor[rows, : max(lengths)].to(device)


def _minibatch_losses(policy, critic, batch, lengths, old_logps, advantages, old_values, returns, mask, tokens,
                      config: PPOConfig) -> tuple[ClippedLoss, ClippedLoss]:
    """The clipped surrogate and value losses of one forward pass, each a share of its minibatch's token mean."""
    logps, _ = reply_log_probs(policy, batch, chunk_size=config.logits_chunk_size)
    values = reply_values(critic, batch)
    surrogate = clipped_surrogate_loss(to_padded(logps, lengths), old_logps, advantages, mask,
                                       clip=config.clip_range, normalizer=tokens)
    value = clipped_value_loss(to_padded(values, lengths), old_values, returns, mask,
                               clip=config.value_clip_range, normalizer=tokens)
    return surrogate, value


@dataclass
class ActorCritic:
    """What PPO trains: the policy and the critic, their optimiser, and the DDP engine over both."""

    policy: torch.nn.Module
    critic: torch.nn.Module
    engine: DataParallel
    optimizer: torch.optim.Optimizer
    parameters: list[torch.nn.Parameter]


def actor_critic(policy: torch.nn.Module, critic: torch.nn.Module, config: PPOConfig) -> ActorCritic:
    parameters = [p for model in (policy, critic) for p in model.parameters() if p.requires_grad]
    return ActorCritic(policy, critic, DataParallel(policy, critic), make_optimizer(parameters, config), parameters)


@dataclass(frozen=True)
class PPOTargets:
    """What a rollout is trained toward, all (B, T) but `scores`."""

    scores: torch.Tensor  # (B,) reward-model scores with any missing-EOS penalty
    kl: torch.Tensor  # per-token log pi_old - log ref
    advantages: torch.Tensor  # GAE, whitened when the config says so
    returns: torch.Tensor  # the critic's regression targets


def ppo_targets(rollout: Rollout, old_values: torch.Tensor, config: PPOConfig, *, beta: float) -> PPOTargets:
    """Per-token KL-penalised rewards, GAE advantages and returns of a whole rollout (Huang et al. 2024)."""
    mask = rollout.mask  # (B, T)
    scores = penalized_scores(rollout, config.missing_eos_penalty)  # (B,)
    rewards, kl = kl_penalized_rewards(scores, rollout.old_logps, rollout.reference_logps, mask, beta=beta)
    if config.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = generalized_advantages(rewards, old_values, mask, gamma=config.gamma, lam=config.lam)
    if config.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return PPOTargets(scores, kl, advantages, returns)


def ppo_update(
    models: ActorCritic,
    rollout: Rollout,
    old_values: torch.Tensor,
    targets: PPOTargets,
    config: PPOConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, float]:
    """`update_epochs` passes over the rollout in `mini_batches` optimiser steps; returns the summed losses.

    Every rank holds the whole rollout and draws the same minibatches; each computes its shard of
    every minibatch. The losses are normalised by the minibatch's token count over all ranks, so
    the sum over ranks is the 1-process loss and DDP's average times world_size its gradient.
    """
    policy, critic, engine = models.policy, models.critic, models.engine
    rank, world_size = engine.context.rank, engine.world_size
    mask = rollout.mask
    totals = {"policy_loss": 0.0, "value_loss": 0.0, "clipped": 0.0, "value_clipped": 0.0, "tokens": 0.0}
    for _ in range(config.update_epochs):
        for indices in minibatch_indices(len(rollout.reply_ids), mini_batches=config.mini_batches,
                                         generator=generator):
            tokens = mask[indices].sum()
            local = torch.tensor(shard(indices.tolist(), rank=rank, world_size=world_size), dtype=torch.long)
            micros = local.split(config.batch_size)
            if not micros:
                with engine.forward_backward(sync=True):
                    engine.forward(engine.idle_loss).backward()
            for position, micro in enumerate(micros):
                rows = micro.tolist()
                batch = pack_replies([rollout.prompt_ids[row] for row in rows],
                                     [rollout.reply_ids[row] for row in rows]).to(device)
                lengths = [len(rollout.reply_ids[row]) for row in rows]
                old_logps, micro_advantages, micro_old_values, micro_returns, micro_mask = (
                    _rows(tensor, micro, lengths, device)
                    for tensor in (rollout.old_logps, targets.advantages, old_values, targets.returns, mask)
                )
                # Held for the backward pass too: gradient checkpointing recomputes forwards inside it.
                with (engine.forward_backward(sync=position == len(micros) - 1), packed_attention(policy),
                      packed_attention(critic), autocast_for(device, dtype)):
                    surrogate, value = engine.forward(partial(
                        _minibatch_losses, policy, critic, batch, lengths, old_logps, micro_advantages,
                        micro_old_values, micro_returns, micro_mask, tokens.to(device), config))
                    # DDP averages gradients over ranks; each rank's loss is its share of the sum.
                    ((surrogate.loss + config.value_loss_coef * value.loss) * world_size).backward()
                micro_tokens = micro_mask.sum().item()
                totals["policy_loss"] += surrogate.loss.item() * tokens.item()
                totals["value_loss"] += value.loss.item() * tokens.item()
                totals["clipped"] += surrogate.clip_fraction.item() * micro_tokens
                totals["value_clipped"] += value.clip_fraction.item() * micro_tokens
                totals["tokens"] += micro_tokens
            optimizer_step(models.optimizer, models.parameters, config)
    return distributed.sum_metrics(totals)


def train_ppo(
    *,
    policy_path: str | Path,
    prompts: list[list[Message]],
    reward_path: str | Path | None = None,
    scorer: Scorer | None = None,
    config: PPOConfig | None = None,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    keep_model: bool = False,
) -> TrainingResult:
    """Train the policy at `policy_path` with PPO on `prompts`, scored by the reward model at `reward_path`.

    `scorer` replaces the reward model (a scripted reward); the critic then needs
    critic_init="policy" unless `reward_path` is given too. The metrics hold one entry per step in
    "history": mean reward, KL, entropy, clip fraction, value loss, reply length and more. Under
    torchrun each process samples and scores its shard of every step's prompts (training.distributed).
    """
    config = config or PPOConfig()
    process = distributed.setup()
    if config.prompts_per_step < process.world_size:
        raise ValueError(f"prompts_per_step={config.prompts_per_step} leaves some of {process.world_size} "
                         "processes without prompts.")
    device, dtype = resolve_device(config)
    set_seed(config.seed)
    models = load_online_models(policy_path=str(policy_path), reward_path=reward_path, scorer=scorer,
                                config=config, device=device, need_reference=True)
    policy, tokenizer = models.policy, models.tokenizer
    critic = _critic(policy_path, reward_path, config, device)
    # Dropout stays off throughout: log-probs at rollout and at update time must be of the same function.
    policy.eval()
    critic.eval()
    if config.gradient_checkpointing:
        for model in (policy, critic):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trained = actor_critic(policy, critic, config)
    controller = AdaptiveKLController(config.beta, target=config.target_kl, horizon=config.kl_horizon)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    replies_seen = 0
    started = time.perf_counter()

    batches = prompt_batches(prompts, per_step=config.prompts_per_step, steps=config.steps, seed=config.seed)
    for step, contexts in enumerate(batches):
        beta = controller.beta if config.adaptive_kl else config.beta
        with autocast_for(device, dtype):
            local = collect_rollout(
                policy=policy, reference=models.reference, tokenizer=tokenizer,
                contexts=shard(contexts, rank=process.rank, world_size=process.world_size),
                generation=config.generation(step, rank=process.rank), scorer=models.scorer,
                batch_size=config.batch_size, chunk_size=config.logits_chunk_size,
            )
            local_values = _rollout_values(critic, local.prompt_ids, local.reply_ids,
                                           batch_size=config.batch_size, device=device)
        rollout, old_values = gather_rollout(local, local_values)
        targets = ppo_targets(rollout, old_values, config, beta=beta)
        totals = ppo_update(trained, rollout, old_values, targets, config, generator=generator, device=device,
                            dtype=dtype)

        replies = len(rollout.reply_ids)
        replies_seen += replies
        kl_per_reply = targets.kl.sum(1)  # (B,) k1 of each reply
        seen = max(1.0, totals["tokens"])
        entry = {
            "step": step + 1,
            "reward_mean": rollout.scores.mean().item(),
            "reward_with_penalty_mean": targets.scores.mean().item(),
            "kl": kl_per_reply.mean().item(),
            "non_score_reward": (-beta * kl_per_reply).mean().item(),
            "entropy": rollout.entropy,
            "clip_fraction": totals["clipped"] / seen,
            "policy_loss": totals["policy_loss"] / seen,
            "value_loss": totals["value_loss"] / seen,
            "value_clip_fraction": totals["value_clipped"] / seen,
            "reply_length": rollout.lengths.mean().item(),
            "eos_rate": rollout.finished.float().mean().item(),
            "beta": beta,
        }
        history.append(entry)
        if config.adaptive_kl:
            controller.update(entry["kl"], replies)
        if progress is not None and process.is_main:
            progress(step + 1, config.steps, entry["policy_loss"] + config.value_loss_coef * entry["value_loss"])

    if config.gradient_checkpointing:
        policy.gradient_checkpointing_disable()
    seconds = time.perf_counter() - started
    last = history[-1] if history else {}
    metrics = {
        "stage": "ppo",
        "steps": len(history),
        "train_seconds": seconds,
        "train_replies_per_second": replies_seen / seconds if seconds else math.nan,
        **{f"final_{name}": value for name, value in last.items() if name != "step"},
        "reference": models.reference_name,
        "history": history,
    }
    report = context_report(tokenizer, prompts, config.max_context_tokens)
    checkpoint = None
    if out_dir is not None:
        resolved = {"stage": "ppo", "policy_path": str(policy_path), "reward_path": str(reward_path),
                    **config.to_dict(), "reference_path": models.reference_name, "device": str(device),
                    "processes": process.world_size}
        checkpoint = save_checkpoint(policy, tokenizer, Path(out_dir), config=resolved, metrics=metrics)
    return TrainingResult(checkpoint=checkpoint, metrics=metrics, report=report, model=policy if keep_model else None)
