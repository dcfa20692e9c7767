"""The optimisation loop every stage shares: AdamW, linear decay, gradient accumulation, clipping.

The defaults are transformers.Trainer's (fused AdamW with weight decay 0, linear decay to zero,
gradient norm clipped at 1.0), so a run here and a TRL run with the same settings optimise the same way.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch

from training.data import EncodingReport
from training.distributed import DataParallel, all_reduce_sum, shard
from training.runtime import pick_device, pick_dtype


class Progress(Protocol):
    def __call__(self, step: int, total: int, loss: float) -> None: ...


@dataclass
class OptimConfig:
    """Settings every training stage shares; each stage's config adds its own."""

    learning_rate: float = 1e-5  # Peak AdamW learning rate; decays linearly to zero.
    epochs: int = 1  # Passes over the training data.
    batch_size: int = 8  # Examples (pairs or demonstrations) per forward pass.
    gradient_accumulation: int = 1  # Forward passes per optimiser step.
    max_length: int = 1024  # Longest prompt+completion in tokens; what overflows is counted.
    weight_decay: float = 0.0  # AdamW decoupled weight decay.
    warmup_ratio: float = 0.0  # Share of optimiser steps spent warming the learning rate up from 0.
    max_grad_norm: float = 1.0  # Gradient norm clip; 0 disables clipping.
    shuffle: bool = True  # Shuffle examples each epoch (seeded); False keeps the given order.
    seed: int = 0  # Seeds weight init of new heads, shuffling and dropout.
    device: str | None = None  # "cpu", "cuda", ...; None picks CUDA when available.
    gradient_checkpointing: bool = False  # Recompute activations in backward: less memory, ~30% slower.
    logits_chunk_size: int = 1024  # Tokens per (chunk, vocab) block of the log-softmax.

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(config: OptimConfig) -> tuple[torch.device, torch.dtype]:
    """The device to train on and the autocast dtype (bf16 on a capable GPU, else float32)."""
    device = pick_device(config.device)
    return device, pick_dtype(device)


def autocast_for(device: torch.device, dtype: torch.dtype):
    """bf16 autocast on a GPU (weights and optimiser state stay float32); nothing on the CPU."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def epoch_batches(items: Sequence[Any], *, batch_size: int, shuffle: bool, seed: int, epoch: int) -> list[list[Any]]:
    """Split items into batches, in a seeded per-epoch shuffled order or in the given order."""
    order = list(range(len(items)))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [[items[index] for index in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]


def optimizer_steps(num_items: int, config: OptimConfig) -> int:
    batches = math.ceil(num_items / config.batch_size)
    return config.epochs * math.ceil(batches / config.gradient_accumulation)


@dataclass
class TrainingResult:
    """What a training stage returns."""

    checkpoint: Path | None  # Where the model was saved, or None when no out_dir was given.
    metrics: dict[str, Any]
    report: EncodingReport  # What encoding did to the training examples (kept, truncated, dropped).
    model: torch.nn.Module | None = None  # The trained model, kept only when asked (tests, notebooks).


@dataclass
class LoopResult:
    steps: int
    losses: list[float]  # Mean loss of each optimiser step.
    seconds: float
    examples: int  # Examples processed (all epochs).


def run_optimisation(
    model: torch.nn.Module,
    items: Sequence[Any],
    loss_of_batch: Callable[[list[Any]], tuple[torch.Tensor, int]],
    config: OptimConfig,
    *,
    progress: Progress | None = None,
    after_epoch: Callable[[int], bool] | None = None,
) -> LoopResult:
    """Train `model` on `items`; `loss_of_batch(batch)` returns the batch's mean loss and what it averages over.

    The second value counts the loss's units (pairs, demonstrations or tokens). Under torchrun each
    process computes its shard of every global batch (training.distributed) and the losses are
    weighted by units, so N processes take the same steps as one; the reported losses are the
    global batches' means.

    `after_epoch(epoch)` runs after each epoch (0-based) with the model in eval mode; returning True
    stops training there (early stopping). The learning-rate schedule keeps the planned length.
    """
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    engine = DataParallel(model)
    rank, world_size = engine.context.rank, engine.world_size
    # The fused kernel updates every parameter in one pass instead of a handful of elementwise
    # operations per tensor; it is what transformers.Trainer uses by default on torch >= 2.8.
    fused = all(parameter.device.type in ("cpu", "cuda") for parameter in parameters)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused)
    total = optimizer_steps(len(items), config)
    warmup = math.ceil(total * config.warmup_ratio)

    def learning_rate_factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    model.train()
    losses = []
    step = 0
    examples = 0
    started = time.perf_counter()
    for epoch in range(config.epochs):
        batches = epoch_batches(items, batch_size=config.batch_size, shuffle=config.shuffle, seed=config.seed, epoch=epoch)
        for group_start in range(0, len(batches), config.gradient_accumulation):
            group = batches[group_start : group_start + config.gradient_accumulation]
            step_loss = 0.0
            for position, batch in enumerate(group):
                local = shard(batch, rank=rank, world_size=world_size)
                with engine.forward_backward(sync=position == len(group) - 1):
                    if local:
                        mean, units = engine.forward(partial(loss_of_batch, local))
                    else:
                        # A global batch smaller than the world leaves this rank nothing; it still
                        # joins the gradient average, with zeros.
                        mean, units = engine.forward(engine.idle_loss), 0
                    loss_sum, global_units = all_reduce_sum(
                        torch.stack([mean.detach().to("cpu", torch.float64) * units,
                                     torch.tensor(float(units), dtype=torch.float64)])).tolist()
                    # DDP averages over ranks, hence * world_size; / global units makes it the batch's mean.
                    (mean * (units * world_size / global_units / len(group))).backward()
                    step_loss += loss_sum / global_units / len(group)
                examples += len(batch)
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(step_loss)
            if progress is not None and engine.context.is_main:
                progress(step, total, step_loss)
        if after_epoch is not None:
            model.eval()
            stop = after_epoch(epoch)
            model.train()
            if stop:
                break
    model.eval()
    return LoopResult(steps=step, losses=losses, seconds=time.perf_counter() - started, examples=examples)
