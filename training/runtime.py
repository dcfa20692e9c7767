"""Device, dtype and seeding choices shared by every training stage."""

from __future__ import annotations

import random

import numpy as np
import torch


def pick_device(requested: str | None = None) -> torch.device:
    """Return the requested device, or CUDA when available and the CPU otherwise."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it; float32 on the CPU, where bf16 matmuls are slower, not faster."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def set_seed(seed: int) -> None:
    """Seed every generator a training or sampling run draws from, so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
