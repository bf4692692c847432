"""Device selection: a GPU when one is present, else the CPU; AMP only where it pays (CUDA)."""
from __future__ import annotations

import torch


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (no loss scaling needed); a no-op elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")
