"""Supervised fine-tuning on demonstrations (the seed's step 0): next-token loss on the replies.

Demonstrations are packed without padding (training.packing) and only reply tokens are scored;
the prompt is context, not target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from training import distributed
from training.checkpoints import load_causal_lm, save_checkpoint
from training.data import Demonstration, EncodedDemonstration, encode_demonstrations
from training.losses import sft_loss
from training.optim import OptimConfig, Progress, TrainingResult, autocast_for, resolve_device, run_optimisation
from training.packing import pack_demonstrations, packed_attention, sequence_log_probs
from training.runtime import set_seed


@dataclass
class SFTConfig(OptimConfig):
    """SFT settings (everything is in OptimConfig; the learning rate default differs)."""

    learning_rate: float = 2e-5


def train_sft(
    *,
    model_path: str | Path,
    demonstrations: list[Demonstration],
    config: SFTConfig | None = None,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    keep_model: bool = False,
) -> TrainingResult:
    """Fine-tune the causal LM at `model_path` on demonstrations and save it to `out_dir`.

    Replies that overflow `config.max_length` are cut, demonstrations whose prompt alone fills it
    are dropped; both are counted in the report.
    """
    config = config or SFTConfig()
    process = distributed.setup()
    device, dtype = resolve_device(config)
    set_seed(config.seed)
    loaded = load_causal_lm(str(model_path), device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    encoded, report = encode_demonstrations(tokenizer, demonstrations, max_length=config.max_length)
    if not encoded:
        raise ValueError(f"No demonstration fits max_length={config.max_length}: {report.summary()}")
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    tokens = {"count": 0, "logp_sum": 0.0}

    def loss_of_batch(batch: list[EncodedDemonstration]) -> tuple[torch.Tensor, int]:
        packed = pack_demonstrations(batch, pad_token_id=tokenizer.pad_token_id).to(device)
        with autocast_for(device, dtype):
            _, token_logps = sequence_log_probs(model, packed, chunk_size=config.logits_chunk_size)
        tokens["count"] += token_logps.numel()
        tokens["logp_sum"] += token_logps.detach().sum().item()
        # A mean over tokens: across processes it is weighted by each shard's token count.
        return sft_loss(token_logps), token_logps.numel()

    # Held for the backward pass too: gradient checkpointing recomputes forwards inside it.
    with packed_attention(model):
        loop = run_optimisation(model, encoded, loss_of_batch, config, progress=progress)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    tokens = distributed.sum_metrics(tokens)
    metrics = {
        "stage": "sft",
        "train_loss": loop.losses[-1],
        "train_loss_mean": sum(loop.losses) / len(loop.losses),
        "train_token_nll": -tokens["logp_sum"] / max(1, tokens["count"]),
        "train_tokens": int(tokens["count"]),
        "steps": loop.steps,
        "train_seconds": loop.seconds,
        "train_examples_per_second": loop.examples / loop.seconds if loop.seconds else math.nan,
        "train_encoding": report.to_dict(),
    }
    checkpoint = None
    if out_dir is not None:
        resolved = {"stage": "sft", "base_model": str(model_path), **config.to_dict(), "device": str(device),
                    "processes": process.world_size}
        checkpoint = save_checkpoint(model, tokenizer, Path(out_dir), config=resolved, metrics=metrics)
    return TrainingResult(checkpoint=checkpoint, metrics=metrics, report=report, model=model if keep_model else None)
