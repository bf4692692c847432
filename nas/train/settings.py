"""Settings shared by every training job, read from YAML or flags with typed, named checks."""
from __future__ import annotations

from dataclasses import dataclass

from nas.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, typed
from nas.pose.dataset import CocoPoseDataset


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

    RANGES = {"batch_size": Range(1, 4096), "ae_weight": NON_NEGATIVE, "background_weight": NON_NEGATIVE,
              "distill_weight": NON_NEGATIVE, "tag_radius": Range(0, 8), "workers": Range(0, 256),
              "seed": Range(0, 2 ** 32 - 1), "val_limit": AT_LEAST_ONE, "time_budget_min": POSITIVE}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        return typed(cls, d, source)


def datasets(settings: Settings) -> tuple[CocoPoseDataset, CocoPoseDataset | None]:
    """The training set and the held-out set (None when the settings name none)."""
    train = CocoPoseDataset(settings.train_ann, settings.train_images, settings.spec)
    val = CocoPoseDataset(settings.val_ann, settings.val_images, settings.spec) if settings.val_ann else None
    return train, val
