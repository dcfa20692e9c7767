"""RLOO and GRPO: k replies per prompt, each judged against its siblings, no critic.

Both sample k replies per prompt (training.rollout), score them with the frozen reward model, and
use the other replies to the same prompt as the baseline, following TRL 1.16's definitions:

    RLOO (Ahmadian et al. 2024)  reward = score - beta * sum_t (log pi_old - log ref); leave-one-out
                                 advantage; sequence-level clipped ratio (rl_losses.rloo_loss)
    GRPO (Shao et al. 2024)      advantage = (score - group mean) / (group std + 1e-4); token-level
                                 clipped ratio plus beta * k3 KL in the loss (rl_losses.grpo_loss)

Per step the metrics hold mean reward, KL (k1 per reply on the rollout, as PPO reports it),
entropy, clip fraction, loss and reply length.
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
from training.checkpoints import save_checkpoint
from training.distributed import DataParallel, shard
from training.optim import Progress, TrainingResult, autocast_for, resolve_device
from training.packing import PackedBatch, packed_attention
from training.rl_losses import OnlineLoss, grpo_advantages, grpo_loss, rloo_advantages, rloo_loss
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
    to_padded,
)
from training.runtime import set_seed


@dataclass
class RLOOConfig(OnlineConfig):
    """RLOO settings; the defaults are TRL 1.16's RLOOConfig's."""

    samples_per_prompt: int = 2  # k >= 2: the leave-one-out baseline needs a sibling.
    beta: float = 0.05  # KL penalty, subtracted from each reply's reward.
    epsilon_low: float = 0.2  # Clip range of the sequence ratio below 1.
    epsilon_high: float = 0.2  # Clip range above 1 (DAPO recommends 0.28).
    normalize_advantages: bool = False  # Whiten advantages over the whole batch.
    mask_truncated_completions: bool = False  # Replies cut before EOS take no part in the loss.


@dataclass
class GRPOConfig(OnlineConfig):
    """GRPO settings; the defaults are TRL 1.16's GRPOConfig's."""

    samples_per_prompt: int = 8  # k: the group size.
    beta: float = 0.0  # Weight of the k3 KL term in the loss; 0 needs no reference model.
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    scale_rewards: Literal["group", "batch", "none"] = "group"  # What the advantage is divided by.
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = "dapo"  # How token losses are aggregated (rl_losses.grpo_loss).
    kl_importance_weighting: bool = True  # Weight the KL term by the ratio (TRL's use_bias_correction_kl).
    mask_truncated_completions: bool = False


def _loss_mask(rollout: Rollout, config: RLOOConfig | GRPOConfig) -> torch.Tensor:
    """Reply-token mask, with replies cut before EOS zeroed when the config says so (DAPO; TRL)."""
    if not config.mask_truncated_completions:
        return rollout.mask
    return rollout.mask * rollout.finished.float()[:, None]


@dataclass(frozen=True)
class _Piece:
    """One forward pass's replies of a minibatch, cut to their longest reply (width)."""

    batch: PackedBatch
    lengths: list[int]
    mask: torch.Tensor  # (b, width)
    old_logps: torch.Tensor  # (b, width)
    advantages: torch.Tensor  # (b,)
    reference_logps: torch.Tensor | None  # (b, width)
    share: float  # The piece's replies over the minibatch's (over all ranks).
    tokens: torch.Tensor  # () loss tokens in the minibatch (over all ranks)


def _piece_loss(kind: str, policy: torch.nn.Module, piece: _Piece,
                config: RLOOConfig | GRPOConfig) -> tuple[torch.Tensor, OnlineLoss]:
    """The piece's part of its minibatch's loss: the pieces' parts add up to the minibatch's loss."""
    logps = to_padded(reply_log_probs(policy, piece.batch, chunk_size=config.logits_chunk_size)[0],
                      piece.lengths)  # (b, width)
    if kind == "rloo":
        result = rloo_loss((logps * piece.mask).sum(1), (piece.old_logps * piece.mask).sum(1), piece.advantages,
                           epsilon_low=config.epsilon_low, epsilon_high=config.epsilon_high)
        return result.loss * piece.share, result
    result = grpo_loss(
        logps, piece.old_logps, piece.advantages, piece.mask, reference_logps=piece.reference_logps,
        beta=config.beta, epsilon_low=config.epsilon_low, epsilon_high=config.epsilon_high,
        loss_type=config.loss_type, kl_importance_weighting=config.kl_importance_weighting,
        max_completion_length=config.max_new_tokens, normalizer=piece.tokens,
    )
    return (result.loss if config.loss_type == "dapo" else result.loss * piece.share), result


def _train_group_relative(
    kind: Literal["rloo", "grpo"],
    *,
    policy_path: str | Path,
    prompts: list[list[Message]],
    reward_path: str | Path | None,
    scorer: Scorer | None,
    config: RLOOConfig | GRPOConfig,
    out_dir: Path | None,
    progress: Progress | None,
    keep_model: bool,
) -> TrainingResult:
    process = distributed.setup()
    if config.prompts_per_step < process.world_size:
        raise ValueError(f"prompts_per_step={config.prompts_per_step} leaves some of {process.world_size} "
                         "processes without prompts.")
    device, dtype = resolve_device(config)
    set_seed(config.seed)
    k = config.samples_per_prompt
    models = load_online_models(policy_path=str(policy_path), reward_path=reward_path, scorer=scorer,
                                config=config, device=device, need_reference=config.beta != 0.0)
    policy, tokenizer = models.policy, models.tokenizer
    policy.eval()  # Dropout off: rollout and update log-probs must be of the same function.
    if config.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    parameters = [parameter for parameter in policy.parameters() if parameter.requires_grad]
    engine = DataParallel(policy)
    optimizer = make_optimizer(parameters, config)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    replies_seen = 0
    started = time.perf_counter()

    for step, contexts in enumerate(prompt_batches(prompts, per_step=config.prompts_per_step, steps=config.steps,
                                                   seed=config.seed)):
        # Each process samples its shard of the prompts, all k replies of a prompt together, so
        # the merged rollout keeps every prompt's group adjacent.
        with autocast_for(device, dtype):
            local = collect_rollout(
                policy=policy, reference=models.reference, tokenizer=tokenizer,
                contexts=shard(contexts, rank=process.rank, world_size=process.world_size),
                generation=config.generation(step, rank=process.rank), scorer=models.scorer,
                batch_size=config.batch_size, chunk_size=config.logits_chunk_size,
            )
        rollout, _ = gather_rollout(local)
        mask = _loss_mask(rollout, config)  # (B, T)
        scores = penalized_scores(rollout, config.missing_eos_penalty)  # (B,)
        kl_per_reply = ((rollout.old_logps - rollout.reference_logps) * mask).sum(1) if models.reference is not None else None
        if kind == "rloo":
            rewards = scores - config.beta * kl_per_reply if kl_per_reply is not None else scores
            advantages = rloo_advantages(rewards, k, normalize=config.normalize_advantages)
        else:
            advantages = grpo_advantages(scores, k, scale=config.scale_rewards)

        totals = {"loss": 0.0, "clipped": 0.0, "weight": 0.0}
        updates = 0
        for _ in range(config.update_epochs):
            for indices in minibatch_indices(len(rollout.reply_ids), mini_batches=config.mini_batches,
                                             generator=generator):
                tokens = mask[indices].sum().to(device)
                local_rows = torch.tensor(shard(indices.tolist(), rank=process.rank, world_size=process.world_size),
                                          dtype=torch.long)
                micros = local_rows.split(config.batch_size)
                if not micros:
                    with engine.forward_backward(sync=True):
                        engine.forward(engine.idle_loss).backward()
                for position, micro in enumerate(micros):
                    rows = micro.tolist()
                    lengths = [len(rollout.reply_ids[row]) for row in rows]
                    width = max(lengths)
                    piece = _Piece(
                        batch=pack_replies([rollout.prompt_ids[row] for row in rows],
                                           [rollout.reply_ids[row] for row in rows]).to(device),
                        lengths=lengths,
                        mask=mask[micro, :width].to(device),
                        old_logps=rollout.old_logps[micro, :width].to(device),
                        advantages=advantages[micro].to(device),
                        reference_logps=(rollout.reference_logps[micro, :width].to(device)
                                         if rollout.reference_logps is not None else None),
                        share=len(rows) / len(indices),  # Per-reply means of the pieces add up to the minibatch's.
                        tokens=tokens,
                    )
                    # Held for the backward pass too: gradient checkpointing recomputes forwards inside it.
                    with (engine.forward_backward(sync=position == len(micros) - 1), packed_attention(policy),
                          autocast_for(device, dtype)):
                        loss, result = engine.forward(partial(_piece_loss, kind, policy, piece, config))
                        # DDP averages gradients over ranks; each rank's loss is its share of the sum.
                        (loss * process.world_size).backward()
                    totals["loss"] += loss.item()
                    totals["clipped"] += result.clip_fraction.item() * len(rows)
                    totals["weight"] += len(rows)
                optimizer_step(optimizer, parameters, config)
                updates += 1
        totals = distributed.sum_metrics(totals)

        replies_seen += len(rollout.reply_ids)
        grouped = rollout.scores.view(-1, k)
        entry = {
            "step": step + 1,
            "reward_mean": rollout.scores.mean().item(),
            "reward_std": rollout.scores.std(correction=1).item() if rollout.scores.numel() > 1 else 0.0,
            "frac_reward_zero_std": (grouped.std(dim=1, correction=1) < 1e-8).float().mean().item(),
            "kl": kl_per_reply.mean().item() if kl_per_reply is not None else math.nan,
            "entropy": rollout.entropy,
            "clip_fraction": totals["clipped"] / max(1.0, totals["weight"]),
            "loss": totals["loss"] / max(1, updates),
            "reply_length": rollout.lengths.mean().item(),
            "eos_rate": rollout.finished.float().mean().item(),
        }
        history.append(entry)
        if progress is not None and process.is_main:
            progress(step + 1, config.steps, entry["loss"])

    if config.gradient_checkpointing:
        policy.gradient_checkpointing_disable()
    seconds = time.perf_counter() - started
    last = history[-1] if history else {}
    metrics = {
        "stage": kind,
        "steps": len(history),
        "train_seconds": seconds,
        "train_replies_per_second": replies_seen / seconds if seconds else math.nan,
        **{f"final_{name}": value for name, value in last.items() if name != "step"},
        "reference": models.reference_name if models.reference is not None else None,
        "history": history,
    }
    report = context_report(tokenizer, prompts, config.max_context_tokens)
    checkpoint = None
    if out_dir is not None:
        resolved = {"stage": kind, "policy_path": str(policy_path), "reward_path": str(reward_path),
                    **config.to_dict(), "device": str(device), "processes": process.world_size}
        checkpoint = save_checkpoint(policy, tokenizer, Path(out_dir), config=resolved, metrics=metrics)
    return TrainingResult(checkpoint=checkpoint, metrics=metrics, report=report, model=policy if keep_model else None)


def train_rloo(
    *,
    policy_path: str | Path,
    prompts: list[list[Message]],
    reward_path: str | Path | None = None,
    scorer: Scorer | None = None,
    config: RLOOConfig | None = None,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    keep_model: bool = False,
) -> TrainingResult:
    """Train the policy at `policy_path` with RLOO on `prompts`, scored by the reward model (or `scorer`)."""
    return _train_group_relative("rloo", policy_path=policy_path, prompts=prompts, reward_path=reward_path,
                                 scorer=scorer, config=config or RLOOConfig(), out_dir=out_dir, progress=progress,
                                 keep_model=keep_model)


def train_grpo(
    *,
    policy_path: str | Path,
    prompts: list[list[Message]],
    reward_path: str | Path | None = None,
    scorer: Scorer | None = None,
    config: GRPOConfig | None = None,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    keep_model: bool = False,
) -> TrainingResult:
    """Train the policy at `policy_path` with GRPO on `prompts`, scored by the reward model (or `scorer`)."""
    return _train_group_relative("grpo", policy_path=policy_path, prompts=prompts, reward_path=reward_path,
                                 scorer=scorer, config=config or GRPOConfig(), out_dir=out_dir, progress=progress,
                                 keep_model=keep_model)
