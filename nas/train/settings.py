"""Settings shared by every training job, read from YAML or flags with typed, named checks."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from nas.pose.dataset import CocoPoseDataset
from nas.errors import PoseNASError
from nas.pose.losses import ae_loss, heatmap_loss, heatmaps


@dataclass
class Settings:
    train_ann: str
    train_images: str
    val_ann: str | None = None
    val_images: str | None = None
    spec: str | None = None
    space: str = "cpu"  # a shipped space name or a YAML path
    batch_size: int = 8
    ae_weight: float = 1e-3
    background_weight: float = 1.0  # heatmap loss weight away from joints (1.0: plain masked MSE)
    distill_weight: float = 1.0  # weight of a teacher's heatmaps as targets (supernet sandwich, finetuning)
    tag_radius: int = 1  # pull tags over the (2r+1)^2 pixels around each joint (0: the joint's pixel)
    workers: int = 1
    seed: int = 0
    val_limit: int | None = 200  # images evaluated between epochs; the final evaluation uses all
    flip_test: bool = False
    augment: bool = True  # random affine + flip; off to overfit a few images
    time_budget_min: float | None = None  # stop (and evaluate) once this much training time is spent
    device: str = "auto"

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        return typed(cls, d, source)

    def datasets(self) -> tuple[CocoPoseDataset, CocoPoseDataset | None]:
        train = CocoPoseDataset(self.train_ann, self.train_images, self.spec)
        val = CocoPoseDataset(self.val_ann, self.val_images, self.spec) if self.val_ann else None
        return train, val

    def pose_loss(self, outputs: list[torch.Tensor], heats, masks, joints, k: int) -> tuple[torch.Tensor, ...]:
        """(total, heatmap, pull, push) for outputs ordered coarse to fine; outputs the network does
        not have (no stride-2 head) are not supervised."""
        preds = heatmaps(outputs, k)
        h_loss = heatmap_loss(preds, heats[:len(preds)], masks[:len(preds)], self.background_weight)
        pull, push = ae_loss(outputs[0][:, k:2 * k], joints)
        return h_loss + self.ae_weight * (pull + push), h_loss, pull, push


def typed(kind, d: dict, source: str = "config"):
    """``kind(**d)`` for a settings dataclass; an unknown key or a value of the wrong type is a
    one-line error naming the source and the setting."""
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise PoseNASError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str, "dict": dict, "list": list}
    for name, value in d.items():
        kinds = [expected[t.split("[")[0]] for t in str(known[name].type).split(" | ") if t.split("[")[0] in expected]
        if value is not None and kinds and not any(is_kind(value, k) for k in kinds):
            raise PoseNASError(f"{source}: setting {name!r} must be {known[name].type}, got {value!r}")
    try:
        return kind(**d)
    except TypeError as e:  # a required setting left out
        raise PoseNASError(f"{source}: {e}") from None


def is_kind(value: Any, kind) -> bool:
    """``isinstance`` where a bool counts as a bool only, never as an int or a float."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return any(isinstance(value, k) and isinstance(value, bool) == (k is bool) for k in kinds)


def warmup_cosine(peak: float, step: int, total: int, warmup: int) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup`` steps, then cosine to zero at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
