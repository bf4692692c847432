"""A stated crowd to time post-processing on: its cost grows with the people in the image, not
with the network, so it is timed on perfect network outputs of ``people`` people laid out on a grid
at the subnet's resolution (one joint in five hidden, so that the refinement of missing joints is
timed too) and shared by every subnet of that resolution and head."""
from __future__ import annotations

import math

import numpy as np

from nas.errors import PoseNASError
from nas.pose.keypoints import SPECS, KeypointSpec

HIDDEN = 0.2  # occluded joints: grouping's refinement fills them in from the maps


def spec_of(num_keypoints: int) -> KeypointSpec:
    """The first shipped keypoint spec with this many joints (grouping reads its joint order)."""
    for spec in SPECS.values():
        if spec.num_keypoints == num_keypoints:
            return spec
    raise PoseNASError(f"--keypoints {num_keypoints}: no keypoint spec has that many joints to time grouping on; "
                       f"shipped: {sorted({s.num_keypoints for s in SPECS.values()})}")


def crowd(people: int, size: int, num_keypoints: int, seed: int = 0) -> np.ndarray:
    """(people, K, 3) keypoints in input pixels: one person per cell of a square grid, each joint
    at a fixed random place in its cell, a ``HIDDEN`` share of them not visible."""
    side = max(1, math.ceil(math.sqrt(people)))
    cell = size / side
    rng = np.random.default_rng(seed)
    out = np.zeros((people, num_keypoints, 3), np.float32)
    for p in range(people):
        row, col = divmod(p, side)
        out[p, :, 0] = (col + rng.uniform(0.1, 0.9, num_keypoints)) * cell
        out[p, :, 1] = (row + rng.uniform(0.1, 0.9, num_keypoints)) * cell
        out[p, :, 2] = np.where(rng.random(num_keypoints) < HIDDEN, 0, 2)
    return out
