"""Reward model training (the seed's step 2): Bradley-Terry on human preference pairs.

The reward model is `AutoModelForSequenceClassification` with one output, initialised from the policy
checkpoint it will judge. A pair's chosen and rejected sequences go through one padding-free forward
pass with their shared prompt computed once (see training.packing); the reward is read at each
sequence's last non-pad token, where transformers reads it at inference.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from training import distributed
from training.checkpoints import load_reward_model, load_tokenizer, save_checkpoint
from training.data import EncodedPair, PreferencePair, encode_pairs
from training.losses import bradley_terry_loss
from training.optim import OptimConfig, Progress, TrainingResult, autocast_for, resolve_device, run_optimisation
from training.packing import pack_pairs, packed_attention, score_each_reply, sequence_rewards
from training.reward_probe import fit_linear_head, pair_features, probe_from_policy
from training.runtime import set_seed

Message = dict[str, str]
REWARD_METHODS = ("finetune", "linear_probe")


@dataclass
class RewardConfig(OptimConfig):
    """Reward-model settings (learning rate and the shared loop settings are in OptimConfig)."""

    learning_rate: float = 1e-5
    use_margin: bool = False  # Demand r(y+) - r(y-) >= the judgment's strength (pair.margin).
    center_rewards_coefficient: float | None = None  # e.g. 0.01 pulls rewards toward zero mean.
    eval_batch_size: int = 16  # Pairs per forward pass when scoring held-out pairs.
    # With held-out pairs: score them after every epoch, stop once accuracy falls below the best
    # epoch's, and keep the best epoch's weights. With a few dozen labels a reward model overfits
    # within two or three epochs, and held-out accuracy is what the app trusts it by.
    early_stopping: bool = False
    # "finetune" trains the whole policy with a scalar head; "linear_probe" fits only a linear head on
    # frozen middle-layer features (training.reward_probe), the method for tens of pairs.
    method: str = "finetune"
    probe_layer_fraction: float = 0.5  # The probe reads the first half of the layers.
    probe_l2: float = 1e-2  # L2 penalty on the probe's standardised weights.


def reward_batch_loss(model: torch.nn.Module, pairs: list[EncodedPair], config: RewardConfig, *, pad_token_id: int):
    """Loss and (chosen, rejected) rewards of one batch of pairs, in one forward pass."""
    device = next(model.parameters()).device
    batch = pack_pairs(pairs, pad_token_id=pad_token_id).to(device)
    rewards = sequence_rewards(model, batch)  # (2B,)
    chosen, rejected = rewards.chunk(2)  # (B,), (B,)
    loss = bradley_terry_loss(
        chosen,
        rejected,
        margin=batch.margins if config.use_margin else None,
        center_coefficient=config.center_rewards_coefficient,
    )
    return loss, chosen.detach(), rejected.detach()


@torch.inference_mode()
def score_pairs(
    model: torch.nn.Module, pairs: list[EncodedPair], *, pad_token_id: int, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of each pair's chosen and rejected sequence: two (num_pairs,) float32 tensors."""
    model.eval()
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        batch = pack_pairs(pairs[start : start + batch_size], pad_token_id=pad_token_id).to(device)
        rewards = sequence_rewards(model, batch).cpu()
        chosen_part, rejected_part = rewards.chunk(2)
        chosen.append(chosen_part)
        rejected.append(rejected_part)
    if not chosen:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(chosen), torch.cat(rejected)


def score_replies(
    model: torch.nn.Module,
    tokenizer,
    contexts: list[list[Message]],
    replies: list[str],
    *,
    max_length: int = 2048,
    batch_size: int = 16,
) -> torch.Tensor:
    """Reward of each (context, reply): (len(replies),) float32. Over-long replies are cut to fit."""
    return score_each_reply(model, tokenizer, contexts, replies, sequence_rewards, max_length=max_length,
                            batch_size=batch_size)


def reward_statistics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Held-out accuracy (ties count as wrong), mean margin, and the rewards' mean and std."""
    if chosen.numel() == 0:
        return {}
    rewards = torch.cat([chosen, rejected])
    return {
        "accuracy": (chosen > rejected).float().mean().item(),
        "mean_margin": (chosen - rejected).mean().item(),
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std(unbiased=False).item(),
        "pairs": chosen.numel(),
    }


def best_epoch(accuracies: list[float]) -> int:
    """The first epoch that reached the highest held-out accuracy (later ties add no evidence)."""
    return accuracies.index(max(accuracies))


def accuracy_fell(accuracies: list[float]) -> bool:
    """Stop once the latest epoch's held-out accuracy is below the best one's."""
    return accuracies[-1] < max(accuracies)


class _EarlyStopping:
    """After each epoch: held-out accuracy; remember the best epoch's weights; stop once it fell."""

    def __init__(self, model, eval_encoded, pad_token_id, config: RewardConfig, device, dtype):
        self.model, self.eval_encoded, self.pad_token_id = model, eval_encoded, pad_token_id
        self.config, self.device, self.dtype = config, device, dtype
        self.accuracies: list[float] = []
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def __call__(self, epoch: int) -> bool:
        with autocast_for(self.device, self.dtype):
            chosen, rejected = score_pairs(self.model, self.eval_encoded, pad_token_id=self.pad_token_id,
                                           batch_size=self.config.eval_batch_size)
        self.accuracies.append((chosen > rejected).float().mean().item())
        if best_epoch(self.accuracies) == epoch:
            self.best_epoch = epoch
            self.best_state = {name: value.detach().to("cpu", copy=True) for name, value in self.model.state_dict().items()}
        return accuracy_fell(self.accuracies)

    def restore_best(self) -> None:
        if self.best_state is not None and self.best_epoch < len(self.accuracies) - 1:
            self.model.load_state_dict(self.best_state)


def train_reward_model(
    *,
    model_path: str | Path,
    train_pairs: list[PreferencePair],
    eval_pairs: list[PreferencePair] | None = None,
    config: RewardConfig | None = None,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    keep_model: bool = False,
) -> TrainingResult:
    """Train a reward model from the causal LM at `model_path` and save it to `out_dir`.

    Pairs longer than `config.max_length` are dropped (and counted), as TRL's RewardTrainer does:
    cutting a reply would score a different reply than the one judged. The metrics hold the
    training loss, held-out accuracy, mean margin and reward mean/std (on the held-out pairs, or
    the training pairs when there are none); the mean/std let the app normalise rewards.
    """
    config = config or RewardConfig()
    if config.method not in REWARD_METHODS:
        raise ValueError(f"method must be one of {', '.join(REWARD_METHODS)}, not {config.method!r}.")
    process = distributed.setup()
    device, dtype = resolve_device(config)
    set_seed(config.seed)  # Seeds the fresh score head too.
    if config.method == "linear_probe":
        return _train_probe(model_path, train_pairs, eval_pairs, config, out_dir, keep_model, device, dtype, process)
    loaded = load_reward_model(str(model_path), device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train_encoded, report = encode_pairs(tokenizer, train_pairs, max_length=config.max_length, overflow="drop")
    if not train_encoded:
        raise ValueError(f"No training pair fits max_length={config.max_length}: {report.summary()}")
    eval_encoded, eval_report = encode_pairs(tokenizer, eval_pairs or [], max_length=config.max_length, overflow="drop")

    accuracy_sum = 0.0

    def loss_of_batch(batch: list[EncodedPair]) -> tuple[torch.Tensor, int]:
        nonlocal accuracy_sum
        with autocast_for(device, dtype):
            loss, chosen, rejected = reward_batch_loss(model, batch, config, pad_token_id=tokenizer.pad_token_id)
        accuracy_sum += (chosen > rejected).float().sum().item()
        return loss, len(batch)

    stopper = _EarlyStopping(model, eval_encoded, tokenizer.pad_token_id, config, device, dtype)
    use_stopper = config.early_stopping and bool(eval_encoded)
    # Held for the backward pass too: gradient checkpointing recomputes forwards inside it.
    with packed_attention(model):
        loop = run_optimisation(model, train_encoded, loss_of_batch, config, progress=progress,
                                after_epoch=stopper if use_stopper else None)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    if use_stopper:
        stopper.restore_best()
    accuracy_sum = distributed.sum_metrics({"accuracy": accuracy_sum})["accuracy"]

    held_out = eval_encoded or train_encoded
    with autocast_for(device, dtype):
        chosen, rejected = score_pairs(
            model, held_out, pad_token_id=tokenizer.pad_token_id, batch_size=config.eval_batch_size
        )
    statistics = reward_statistics(chosen, rejected)
    metrics = {
        "stage": "reward",
        "train_loss": loop.losses[-1],
        "train_loss_mean": sum(loop.losses) / len(loop.losses),
        "train_accuracy": accuracy_sum / max(1, loop.examples),
        "steps": loop.steps,
        "train_seconds": loop.seconds,
        "train_pairs_per_second": loop.examples / loop.seconds if loop.seconds else math.nan,
        "train_encoding": report.to_dict(),
        "eval_encoding": eval_report.to_dict(),
        "statistics_on": "held_out" if eval_encoded else "train",
        **{("eval_" if eval_encoded else "train_") + name: value for name, value in statistics.items()},
        # The app normalises rewards with these; they come from held-out pairs where there are any.
        "reward_mean": statistics["reward_mean"],
        "reward_std": statistics["reward_std"],
    }
    if use_stopper:
        metrics.update(epoch_eval_accuracies=stopper.accuracies, best_epoch=stopper.best_epoch)
    checkpoint = None
    if out_dir is not None:
        resolved = {"stage": "reward", "base_model": str(model_path), **config.to_dict(), "device": str(device),
                    "processes": process.world_size}
        checkpoint = save_checkpoint(model, tokenizer, Path(out_dir), config=resolved, metrics=metrics)
    return TrainingResult(checkpoint=checkpoint, metrics=metrics, report=report, model=model if keep_model else None)


def _train_probe(model_path, train_pairs, eval_pairs, config: RewardConfig, out_dir, keep_model, device, dtype,
                 process) -> TrainingResult:
    """The linear-probe reward model: features once under inference mode, then the head by L-BFGS."""
    tokenizer = load_tokenizer(str(model_path))
    model = probe_from_policy(model_path, layer_fraction=config.probe_layer_fraction, dtype=dtype).to(device).eval()
    train_encoded, report = encode_pairs(tokenizer, train_pairs, max_length=config.max_length, overflow="drop")
    if not train_encoded:
        raise ValueError(f"No training pair fits max_length={config.max_length}: {report.summary()}")
    eval_encoded, eval_report = encode_pairs(tokenizer, eval_pairs or [], max_length=config.max_length, overflow="drop")
    started = time.perf_counter()
    with autocast_for(device, dtype):
        chosen, rejected = pair_features(model, train_encoded, pad_token_id=tokenizer.pad_token_id,
                                         batch_size=config.eval_batch_size)
    margins = torch.tensor([pair.margin for pair in train_encoded], dtype=torch.float32) if config.use_margin else None
    weight, loss, iterations = fit_linear_head(chosen - rejected, l2=config.probe_l2, margins=margins)
    model.head.weight.data.copy_(weight.unsqueeze(0))
    seconds = time.perf_counter() - started
    train_accuracy = ((chosen - rejected) @ weight > 0).float().mean().item()
    held_out = eval_encoded or train_encoded
    with autocast_for(device, dtype):
        scored_chosen, scored_rejected = score_pairs(model, held_out, pad_token_id=tokenizer.pad_token_id,
                                                     batch_size=config.eval_batch_size)
    statistics = reward_statistics(scored_chosen, scored_rejected)
    metrics = {
        "stage": "reward",
        "method": "linear_probe",
        "train_loss": loss,
        "train_loss_mean": loss,
        "train_accuracy": train_accuracy,
        "steps": iterations,
        "train_seconds": seconds,
        "train_pairs_per_second": len(train_encoded) / seconds if seconds else math.nan,
        "train_encoding": report.to_dict(),
        "eval_encoding": eval_report.to_dict(),
        "statistics_on": "held_out" if eval_encoded else "train",
        **{("eval_" if eval_encoded else "train_") + name: value for name, value in statistics.items()},
        "reward_mean": statistics["reward_mean"],
        "reward_std": statistics["reward_std"],
    }
    checkpoint = None
    if out_dir is not None:
        resolved = {"stage": "reward", "base_model": str(model_path), **config.to_dict(), "device": str(device),
                    "processes": process.world_size}
        checkpoint = save_checkpoint(model, tokenizer, Path(out_dir), config=resolved, metrics=metrics)
    return TrainingResult(checkpoint=checkpoint, metrics=metrics, report=report, model=model if keep_model else None)
