"""Where the app's models live on disk, and a per-process cache of the one being served.

MODEL_NAME names the base policy: the bundled SmolLM2 (converted once by `prepare_model` into
MODELS_DIR), a local checkpoint directory, or a Hugging Face id the machine can reach.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from training.checkpoints import (
    BUNDLED_MODEL_NAME,
    LoadedModel,
    ModelUnavailable,
    bundled_gguf_path,
    convert_gguf,
    load_causal_lm,
)
from training.runtime import pick_device, pick_dtype


def bundled_model_dir() -> Path:
    return Path(settings.MODELS_DIR) / BUNDLED_MODEL_NAME


def base_model_location(name: str | None = None) -> str:
    """Resolve MODEL_NAME to something `from_pretrained` can open, or explain what is missing."""
    name = name or settings.MODEL_NAME
    if Path(name).is_dir():
        return str(Path(name).resolve())
    if name == BUNDLED_MODEL_NAME:
        prepared = bundled_model_dir()
        if not (prepared / "config.json").is_file():
            raise ModelUnavailable(
                f"The bundled model has not been prepared: run `python manage.py prepare_model` "
                f"to convert it into {prepared}."
            )
        return str(prepared)
    return name


def prepare_bundled_model(*, force: bool = False) -> Path:
    """Convert the bundled GGUF into a safetensors checkpoint once; later calls return at once."""
    target = bundled_model_dir()
    if force or not (target / "config.json").is_file():
        convert_gguf(bundled_gguf_path(), target)
    return target


_cache_lock = threading.Lock()
_cached: dict[str, LoadedModel] = {}


def serving_model(path: str) -> LoadedModel:
    """Load a policy once per worker process; switching to another version evicts the old one.

    A worker generates with one policy at a time, so one cached model is enough and keeps memory
    flat across rounds.
    """
    with _cache_lock:
        if path not in _cached:
            _cached.clear()
            device = pick_device(settings.TRAINING_DEVICE or None)
            loaded = load_causal_lm(path, device=device, dtype=pick_dtype(device))
            loaded.model.eval()
            _cached[path] = loaded
        return _cached[path]
