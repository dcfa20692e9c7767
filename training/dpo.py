"""Direct preference optimisation (the seed's step 3, the design card's policy trainer).

Per batch there is one forward pass of the policy: the pairs are packed without padding, each
pair's prompt computed once for both completions (training.packing), and only completion tokens
reach the LM head, through a chunked log-softmax (training.losses.token_log_probs).

The reference model's summed log-probs are computed once per round, before training, under
inference mode, and cached on disk keyed by the encoded data, the reference checkpoint, the
tokenizer and max_length; a second run on the same round reads them instead of recomputing. The
reference is an explicit setting: `reference_path=None` means the policy's starting weights (the
base or SFT model), or it names another checkpoint (e.g. the previous round's policy). With LoRA
the reference is the same model with its adapter disabled, so no second copy is held in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training import distributed
from training.checkpoints import load_causal_lm, save_checkpoint
from training.data import EncodedPair, PreferencePair, encode_pairs
from training.losses import dpo_sigmoid_loss
from training.optim import OptimConfig, Progress, TrainingResult, autocast_for, resolve_device, run_optimisation
from training.packing import pack_pairs, packed_attention, sequence_log_probs
from training.runtime import set_seed

CACHE_FORMAT = 1


@dataclass
class DPOConfig(OptimConfig):
    """DPO settings (learning rate and the shared loop settings are in OptimConfig)."""

    learning_rate: float = 1e-6
    beta: float = 0.1  # Strength of the pull toward the reference; higher stays closer.
    label_smoothing: float = 0.0  # cDPO: probability a label is flipped (see dpo_sigmoid_loss).
    reference_path: str | None = None  # None: the policy's starting weights; else another checkpoint.
    reference_batch_size: int = 16  # Pairs per forward pass when computing reference log-probs.
    lora_rank: int = 0  # 0 trains every weight; > 0 trains a LoRA adapter of this rank (merged on save).
    lora_alpha: int = 16  # LoRA scaling numerator (scale = alpha / rank).
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])


@dataclass(frozen=True)
class ReferenceLogProbs:
    chosen: torch.Tensor  # (num_pairs,) summed reference log-probs of the chosen completions
    rejected: torch.Tensor  # (num_pairs,)
    cache_hit: bool
    cache_file: Path | None


def _checkpoint_identity(path: str | Path) -> dict:
    """Path, sizes and modification times of a checkpoint's weight files (cheap, unlike a hash)."""
    path = Path(path)
    if not path.is_dir():
        return {"name": str(path)}
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    return {
        "path": str(path.resolve()),
        "weights": [(file.name, file.stat().st_size, file.stat().st_mtime_ns) for file in files],
    }


def _tokenizer_fingerprint(tokenizer) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    digest.update(str(tokenizer.chat_template).encode())
    return digest.hexdigest()


def reference_cache_key(
    pairs: list[EncodedPair], *, reference: str | Path, tokenizer, max_length: int
) -> str:
    """Key of a round's reference log-probs: data, reference checkpoint, tokenizer, max_length."""
    data = hashlib.sha256()
    for pair in pairs:
        data.update(json.dumps([pair.prompt_ids, pair.chosen_ids, pair.rejected_ids]).encode())
    key = {
        "format": CACHE_FORMAT,
        "data": data.hexdigest(),
        "reference": _checkpoint_identity(reference),
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


@torch.inference_mode()
def compute_sequence_log_probs(
    model: torch.nn.Module, pairs: list[EncodedPair], *, pad_token_id: int, batch_size: int, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of every pair under `model`: (num_pairs,) chosen and rejected."""
    model.eval()
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        batch = pack_pairs(pairs[start : start + batch_size], pad_token_id=pad_token_id).to(device)
        sums, _ = sequence_log_probs(model, batch, chunk_size=chunk_size)
        chosen_part, rejected_part = sums.float().cpu().chunk(2)
        chosen.append(chosen_part)
        rejected.append(rejected_part)
    return torch.cat(chosen), torch.cat(rejected)


def reference_log_probs(
    pairs: list[EncodedPair],
    *,
    reference_model: torch.nn.Module,
    reference_name: str | Path,
    tokenizer,
    config: DPOConfig,
    cache_dir: Path | None,
    device: torch.device,
    dtype: torch.dtype,
) -> ReferenceLogProbs:
    """The reference's log-probs for `pairs`, from the disk cache when this round was seen before.

    Under torchrun every rank computes them for every pair (a forward pass without gradient, a
    fraction of training's cost) and only rank 0 writes the cache.
    """
    cache_file = None
    if cache_dir is not None:
        key = reference_cache_key(pairs, reference=reference_name, tokenizer=tokenizer, max_length=config.max_length)
        cache_file = Path(cache_dir) / f"{key}.pt"
        if cache_file.is_file():
            stored = torch.load(cache_file, map_location="cpu", weights_only=True)
            return ReferenceLogProbs(stored["chosen"], stored["rejected"], cache_hit=True, cache_file=cache_file)
    with autocast_for(device, dtype):
        chosen, rejected = compute_sequence_log_probs(
            reference_model,
            pairs,
            pad_token_id=tokenizer.pad_token_id,
            batch_size=config.reference_batch_size,
            chunk_size=config.logits_chunk_size,
        )
    chosen, rejected = chosen.clone(), rejected.clone()  # Ordinary tensors, not inference tensors.
    if cache_file is not None and distributed.context().is_main:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        staging = cache_file.with_suffix(".tmp")
        torch.save({"chosen": chosen, "rejected": rejected}, staging)
        staging.replace(cache_file)
    return ReferenceLogProbs(chosen, rejected, cache_hit=False, cache_file=cache_file)


def _with_lora(model: torch.nn.Module, config: DPOConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


@dataclass(frozen=True)
class _IndexedPair:
    index: int
    pair: EncodedPair


def train_dpo(
    *,
    policy_path: str | Path,
    pairs: list[PreferencePair],
    config: DPOConfig | None = None,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    keep_model: bool = False,
) -> TrainingResult:
    """Train the policy at `policy_path` with DPO on `pairs` and save it to `out_dir`.

    Completions that overflow `config.max_length` are cut (TRL's keep_start), pairs whose prompt
    alone fills it are dropped; both are counted in the result's report and metrics.
    """
    config = config or DPOConfig()
    process = distributed.setup()
    device, dtype = resolve_device(config)
    set_seed(config.seed)
    loaded = load_causal_lm(str(policy_path), device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    encoded, report = encode_pairs(tokenizer, pairs, max_length=config.max_length, overflow="truncate")
    if not encoded:
        raise ValueError(f"No training pair fits max_length={config.max_length}: {report.summary()}")

    if config.lora_rank:
        model = _with_lora(model, config)
    reference_name = config.reference_path or str(policy_path)
    if config.reference_path is None or Path(config.reference_path) == Path(policy_path):
        # The starting weights: the policy itself before its first step (adapter disabled with LoRA).
        reference_model = model
        adapter_off = model.disable_adapter() if config.lora_rank else nullcontext()
    else:
        reference_model = load_causal_lm(config.reference_path, device=device).model
        adapter_off = nullcontext()
    with adapter_off:
        reference = reference_log_probs(
            encoded,
            reference_model=reference_model,
            reference_name=reference_name,
            tokenizer=tokenizer,
            config=config,
            cache_dir=cache_dir,
            device=device,
            dtype=dtype,
        )
    del reference_model  # A separately loaded reference is freed here.

    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.lora_rank:
            model.enable_input_require_grads()
    totals = {"accuracy": 0.0, "chosen_rewards": 0.0, "rejected_rewards": 0.0, "pairs": 0}

    def loss_of_batch(batch: list[_IndexedPair]) -> tuple[torch.Tensor, int]:
        indices = torch.tensor([item.index for item in batch])
        packed = pack_pairs([item.pair for item in batch], pad_token_id=tokenizer.pad_token_id).to(device)
        with autocast_for(device, dtype):
            sums, _ = sequence_log_probs(model, packed, chunk_size=config.logits_chunk_size)
        chosen_logps, rejected_logps = sums.chunk(2)  # (B,), (B,)
        result = dpo_sigmoid_loss(
            chosen_logps,
            rejected_logps,
            reference.chosen[indices].to(device),
            reference.rejected[indices].to(device),
            beta=config.beta,
            label_smoothing=config.label_smoothing,
        )
        totals["accuracy"] += (result.chosen_rewards > result.rejected_rewards).float().sum().item()
        totals["chosen_rewards"] += result.chosen_rewards.sum().item()
        totals["rejected_rewards"] += result.rejected_rewards.sum().item()
        totals["pairs"] += len(batch)
        return result.loss, len(batch)

    items = [_IndexedPair(index, pair) for index, pair in enumerate(encoded)]
    # Held for the backward pass too: gradient checkpointing recomputes forwards inside it.
    with packed_attention(model):
        loop = run_optimisation(model, items, loss_of_batch, config, progress=progress)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    if config.lora_rank:
        model = model.merge_and_unload()  # The app loads a plain causal LM.

    totals = distributed.sum_metrics(totals)
    seen = max(1, totals["pairs"])
    metrics = {
        "stage": "dpo",
        "train_loss": loop.losses[-1],
        "train_loss_mean": sum(loop.losses) / len(loop.losses),
        "train_reward_accuracy": totals["accuracy"] / seen,
        "train_chosen_reward_mean": totals["chosen_rewards"] / seen,
        "train_rejected_reward_mean": totals["rejected_rewards"] / seen,
        "train_reward_margin_mean": (totals["chosen_rewards"] - totals["rejected_rewards"]) / seen,
        "steps": loop.steps,
        "train_seconds": loop.seconds,
        "train_pairs_per_second": loop.examples / loop.seconds if loop.seconds else math.nan,
        "reference": reference_name,
        "reference_cache_hit": reference.cache_hit,
        "train_encoding": report.to_dict(),
    }
    checkpoint = None
    if out_dir is not None:
        resolved = {
            "stage": "dpo",
            "policy_path": str(policy_path),
            **config.to_dict(),
            "reference_path": reference_name,
            "device": str(device),
            "processes": process.world_size,
        }
        checkpoint = save_checkpoint(model, tokenizer, Path(out_dir), config=resolved, metrics=metrics)
    return TrainingResult(checkpoint=checkpoint, metrics=metrics, report=report, model=model if keep_model else None)
