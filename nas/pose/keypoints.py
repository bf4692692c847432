"""Keypoint specifications: names, flip pairs, OKS sigmas and skeleton for each dataset kind."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nas.errors import PoseNASError


@dataclass(frozen=True)
class KeypointSpec:
    name: str
    keypoints: tuple[str, ...]
    sigmas: tuple[float, ...]
    skeleton: tuple[tuple[int, int], ...]  # 0-based joint index pairs
    group_order: tuple[int, ...] = field(default=())  # grouping visits torso joints first

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        assert len(self.sigmas) == k, self.name
        assert all(0 <= a < k and 0 <= b < k for a, b in self.skeleton), self.name
        if not self.group_order:
            object.__setattr__(self, "group_order", tuple(range(k)))
        assert sorted(self.group_order) == list(range(k)), self.name

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def flip_index(self) -> list[int]:
        """For each joint, the joint it becomes under a horizontal flip (left <-> right)."""
        index = {n: i for i, n in enumerate(self.keypoints)}
        out = []
        for n in self.keypoints:
            if n.startswith("left_"):
                out.append(index["right_" + n[5:]])
            elif n.startswith("right_"):
                out.append(index["left_" + n[6:]])
            else:
                out.append(index[n])
        return out

    @property
    def flip_pairs(self) -> list[tuple[int, int]]:
        return [(i, j) for i, j in enumerate(self.flip_index) if i < j]

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)


def normalize_name(name: str) -> str:
    """'Right Shoulder' and 'right_shoulder' name the same joint; 'Head top' is 'head_top'."""
    return "_".join(name.strip().lower().replace("-", " ").split())


_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_COCO_SIGMAS = tuple(s / 10 for s in (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89))
_COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
_COCO_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)

COCO = KeypointSpec("coco", _COCO_NAMES, _COCO_SIGMAS, _COCO_SKELETON, _COCO_ORDER)
OCHUMAN = KeypointSpec("ochuman", _COCO_NAMES, _COCO_SIGMAS, _COCO_SKELETON, _COCO_ORDER)
CROWDPOSE = KeypointSpec(
    "crowdpose",
    ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
     "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"),
    tuple(s / 10 for s in (0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89, 0.79, 0.79)),
    ((12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7), (6, 8),
     (8, 10), (7, 9), (9, 11)),
    (13, 12, 0, 1, 6, 7, 2, 3, 4, 5, 8, 9, 10, 11),
)
AIC = KeypointSpec(
    "aic",
    ("right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
     "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "head_top", "neck"),
    (0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642,
     0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173),
    ((2, 1), (1, 0), (0, 13), (13, 3), (3, 4), (4, 5), (8, 7), (7, 6), (6, 9), (9, 10), (10, 11),
     (12, 13), (0, 6), (3, 9)),
    (13, 12, 0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11),
)

SPECS: dict[str, KeypointSpec] = {s.name: s for s in (COCO, CROWDPOSE, AIC, OCHUMAN)}


def get_spec(name: str) -> KeypointSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise PoseNASError(f"unknown keypoint spec {name!r}; choose one of {sorted(SPECS)}") from None


def detect_spec(keypoint_names: list[str]) -> KeypointSpec | None:
    """The spec whose joint names match a COCO category's ``keypoints`` list, if any."""
    names = tuple(normalize_name(n) for n in keypoint_names)
    for spec in SPECS.values():
        if spec.keypoints == names:
            return spec
    return None


def person_oks(predicted: np.ndarray, target: np.ndarray, visible: np.ndarray, areas: np.ndarray,
               spec: KeypointSpec) -> np.ndarray:
    """COCO's object keypoint similarity of each person's predicted joints (P, K, 2) to the target's
    over its ``visible`` joints (P, K), at the people's ``areas`` (P,), as COCOeval computes it."""
    variances = (2 * spec.sigmas_array) ** 2
    e = ((predicted - target) ** 2).sum(-1) / variances / (areas[:, None] + np.spacing(1)) / 2
    return (np.exp(-e) * visible).sum(1) / np.maximum(visible.sum(1), 1)
