"""Geometry: letterbox and random affine into a square input, flips, and the map to output strides.

Coordinates follow the pixel-centre convention: input pixel x covers [x - 0.5, x + 0.5], and an
output map of stride s samples input point (u + 0.5) * s - 0.5 at its pixel u. This is the
convention of ``F.interpolate(align_corners=False)``, so maps of different strides line up.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def letterbox_matrix(width: int, height: int, size: int) -> np.ndarray:
    """2x3 affine that fits the whole image, centred, into a size x size square."""
    s = size / max(width, height)
    return np.array([[s, 0, (size - 1) / 2 - s * (width - 1) / 2],
                     [0, s, (size - 1) / 2 - s * (height - 1) / 2]], dtype=np.float64)


def random_affine_matrix(width: int, height: int, size: int, rng: np.random.Generator,
                         scale: tuple[float, float] = (0.75, 1.5), rotation: float = 30.0,
                         translate: float = 0.2) -> np.ndarray:
    """Letterbox, then a random zoom, rotation about the centre, and shift (HigherHRNet-style)."""
    s = rng.uniform(*scale)
    r = np.deg2rad(rng.uniform(-rotation, rotation))
    t = rng.uniform(-translate, translate, size=2) * size
    c = (size - 1) / 2
    a, b = s * np.cos(r), s * np.sin(r)
    around_centre = np.array([[a, -b, c - a * c + b * c + t[0]],
                              [b, a, c - b * c - a * c + t[1]],
                              [0, 0, 1]])
    return (around_centre @ np.vstack([letterbox_matrix(width, height, size), [0, 0, 1]]))[:2]


def hflip_matrix(size: int) -> np.ndarray:
    return np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine that applies ``inner`` first, then ``outer``."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def stride_matrix(stride: int) -> np.ndarray:
    """Input pixel coordinates to output-map coordinates at ``stride``."""
    o = 0.5 / stride - 0.5
    return np.array([[1.0 / stride, 0, o], [0, 1.0 / stride, o]])


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def apply_to_points(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to points (..., 2)."""
    return xy @ matrix[:, :2].T + matrix[:, 2]


def warp_keypoints(keypoints: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Move (N, K, 3) keypoints; joints that leave the square become unlabeled (v = 0)."""
    out = keypoints.copy()
    out[..., :2] = apply_to_points(matrix, keypoints[..., :2])
    inside = (out[..., 0] >= -0.5) & (out[..., 0] < size - 0.5) & (out[..., 1] >= -0.5) & (out[..., 1] < size - 0.5)
    out[..., 2] = np.where(inside & (keypoints[..., 2] > 0), keypoints[..., 2], 0)
    return out


def warp_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB to float32 CHW, ImageNet-normalised."""
    return ((image.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation ranges; ``None`` turns augmentation off (letterbox only)."""

    scale: tuple[float, float] = (0.75, 1.5)
    rotation: float = 30.0
    translate: float = 0.2
    flip: float = 0.5


def input_matrix(width: int, height: int, size: int, augment: Augment | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """The image-to-input affine for one sample, and whether it mirrors the image."""
    if augment is None:
        return letterbox_matrix(width, height, size), False
    m = random_affine_matrix(width, height, size, rng, augment.scale, augment.rotation, augment.translate)
    if rng.random() < augment.flip:
        return compose(hflip_matrix(size), m), True
    return m, False
