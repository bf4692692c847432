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


def batch_to(batch, device: torch.device):
    """A training batch (images, heatmaps, masks, tag indices, people) on ``device``; images in
    channels-last layout on the CPU, where the convolutions run fastest that way."""
    images, heats, masks, joints, people = batch
    images = images.to(device, non_blocking=True)
    if device.type == "cpu":
        images = images.contiguous(memory_format=torch.channels_last)
    return images, [h.to(device) for h in heats], [m.to(device) for m in masks], joints.to(device), people.to(device)
