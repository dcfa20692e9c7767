"""Device, dtype and seeding choices shared by every training stage."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device(requested: str | None = None) -> torch.device:
    """Return the requested device, or CUDA when available and the CPU otherwise.

    Under a launcher (torchrun) each process on a machine takes its own GPU, the one LOCAL_RANK names.
    """
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


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
