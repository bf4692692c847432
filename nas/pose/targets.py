"""Bottom-up training targets: multi-resolution Gaussian heatmaps, tag indices, ignore masks."""
from __future__ import annotations

import numpy as np
import torch

from nas.pose.transforms import apply_to_points, stride_matrix

SIGMA = 2.0


def heatmaps(keypoints: np.ndarray, size: int, num_keypoints: int, sigma: float = SIGMA) -> np.ndarray:
    """(K, size, size) maps; each joint a Gaussian of ``sigma`` output pixels, max over people.

    ``keypoints`` are (N, K, 3) in this map's coordinates; joints with v == 0 are skipped.
    """
    out = np.zeros((num_keypoints, size, size), dtype=np.float32)
    radius = int(np.ceil(3 * sigma))
    for person in keypoints:
        for k, (x, y, v) in enumerate(person):
            if v <= 0 or not (-0.5 <= x < size - 0.5 and -0.5 <= y < size - 0.5):
                continue
            cx, cy = int(round(x)), int(round(y))
            x0, x1 = max(cx - radius, 0), min(cx + radius + 1, size)
            y0, y1 = max(cy - radius, 0), min(cy + radius + 1, size)
            gx = np.exp(-((np.arange(x0, x1) - x) ** 2) / (2 * sigma**2))
            gy = np.exp(-((np.arange(y0, y1) - y) ** 2) / (2 * sigma**2))
            patch = out[k, y0:y1, x0:x1]
            np.maximum(patch, gy[:, None] * gx[None, :], out=patch)
    return out


def tag_indices(keypoints: np.ndarray, size: int, num_keypoints: int, max_people: int, radius: int = 0) -> np.ndarray:
    """(max_people, K * (2r+1)^2, 2) int64: flat indices k*H*W + y*W + x and a valid flag.

    The associative-embedding loss gathers each person's tags at these positions: the joint's
    pixel (radius 0, as HigherHRNet) or the square of pixels around it, so that a peak decoded a
    pixel off still reads its person's tag.
    """
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    out = np.zeros((max_people, num_keypoints * len(offsets), 2), dtype=np.int64)
    for i, person in enumerate(keypoints[:max_people]):
        for j, (x, y, v) in enumerate(person):
            if v <= 0:
                continue
            for n, (dy, dx) in enumerate(offsets):
                xi, yi = int(round(x)) + dx, int(round(y)) + dy
                if 0 <= xi < size and 0 <= yi < size:
                    out[i, j * len(offsets) + n] = (j * size * size + yi * size + xi, 1)
    return out


def tag_maps(keypoints: np.ndarray, size: int, num_keypoints: int, sigma: float = SIGMA) -> np.ndarray:
    """Ideal tag maps: each person's id (1, 2, ...) wherever its Gaussian dominates a joint's map.

    Not a training target: used to decode ground truth back (the oracle) and to test grouping.
    """
    best = np.zeros((num_keypoints, size, size), dtype=np.float32)
    tags = np.zeros((num_keypoints, size, size), dtype=np.float32)
    for i, person in enumerate(keypoints):
        h = heatmaps(person[None], size, num_keypoints, sigma)
        win = h > best
        tags[win] = i + 1
        best = np.maximum(best, h)
    return tags


def oracle_outputs(keypoints: np.ndarray, size: int, num_keypoints: int, strides: tuple[int, ...]
                   ) -> list[torch.Tensor]:
    """Perfect network outputs for keypoints in input pixels: heatmaps per stride, ideal tags."""
    outs = []
    for i, s in enumerate(strides):
        kp = keypoints.copy()
        kp[..., :2] = apply_to_points(stride_matrix(s), keypoints[..., :2])
        maps = [heatmaps(kp, size // s, num_keypoints)]
        if i == 0:
            maps.append(tag_maps(kp, size // s, num_keypoints))
        outs.append(torch.from_numpy(np.concatenate(maps))[None])
    return outs
