"""Draw detected skeletons on an image."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from nas.pose.keypoints import KeypointSpec


def draw_people(image: np.ndarray, people: np.ndarray, spec: KeypointSpec, min_joint_score: float = 0.05) -> np.ndarray:
    """A copy of an RGB image with each person's skeleton in its own colour; people: (P, K, 3)."""
    out = image.copy()
    scale = max(1, round(max(image.shape[:2]) / 400))
    for i, person in enumerate(people):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618) % 1.0, 0.9, 1.0)
        color = (int(r * 255), int(g * 255), int(b * 255))
        ok = person[:, 2] >= min_joint_score
        for a, b_ in spec.skeleton:
            if ok[a] and ok[b_]:
                cv2.line(out, tuple(int(v) for v in person[a, :2]), tuple(int(v) for v in person[b_, :2]),
                         color, 2 * scale, cv2.LINE_AA)
        for (x, y, _), good in zip(person, ok):
            if good:
                cv2.circle(out, (int(x), int(y)), 2 * scale, (255, 255, 255), -1, cv2.LINE_AA)
    return out
