"""The grouping as it was before it was compiled (NumPy, SciPy and torch, a Python loop per joint
type): the reference that ``nas.pose.grouping`` must agree with exactly."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from nas.pose.decode import DecodeConfig
from nas.pose.keypoints import KeypointSpec


def equal_peaks(joints: np.ndarray, radius: int) -> np.ndarray:
    """``joints`` (K, M, 3) with the score of every candidate zeroed that has an equal, earlier
    (raster order) candidate of its joint within ``radius``: of two equal peaks one survives."""
    x, y, score = joints[..., 0], joints[..., 1], joints[..., 2]
    near = (np.abs(x[:, :, None] - x[:, None]) <= radius) & (np.abs(y[:, :, None] - y[:, None]) <= radius)
    raster = y.astype(np.float64) * 1e6 + x
    earlier = raster[:, :, None] < raster[:, None]  # [k, i, j]: candidate i comes before candidate j
    shadowed = (near & earlier & (score[:, :, None] == score[:, None]) & (score[:, :, None] > 0)).any(1)
    if not shadowed.any():
        return joints
    out = joints.copy()
    out[..., 2][shadowed] = 0
    return out


def match(joints: np.ndarray, tags: np.ndarray, spec: KeypointSpec, cfg: DecodeConfig) -> np.ndarray:
    """HigherHRNet's greedy-by-joint grouping with an optimal assignment at each joint type.

    joints: (K, M, 3) x, y, score of the top-M candidates per joint; tags: (K, M, D).
    Returns (P, K, 3 + D) people. Each joint type is one assignment and a few array operations
    (no Python loop per candidate): joined candidates extend their person, the rest start new ones.
    """
    k_total, _, d = tags.shape
    most = int((joints[..., 2] > cfg.detection_threshold).sum())  # at most one person per candidate
    people = np.zeros((most, k_total, 3 + d), dtype=np.float32)
    tag_sums, counts, found = np.zeros((most, d)), np.zeros(most), 0  # per person: the sum and count of its tags
    for k in spec.group_order:
        keep = joints[k, :, 2] > cfg.detection_threshold
        cand = np.concatenate([joints[k][keep], tags[k][keep]], axis=1)
        if len(cand) == 0:
            continue
        grouped = min(found, cfg.max_people)
        rows, joined = np.arange(len(cand)), np.zeros(len(cand), dtype=bool)
        if grouped:
            means = tag_sums[:grouped] / counts[:grouped, None]
            diff = np.linalg.norm(cand[:, None, 3:] - means[None], axis=2)
            cost = np.round(diff) * 100 - cand[:, 2:3] if cfg.use_detection_val else diff.copy()
            if len(cand) > grouped:
                cost = np.concatenate([cost, np.full((len(cand), len(cand) - grouped), 1e10)], axis=1)
            rows, cols = linear_sum_assignment(cost)
            joined = cols < grouped
            joined[joined] = diff[rows[joined], cols[joined]] < cfg.tag_threshold
            to = cols[joined]
            people[to, k] = cand[rows[joined]]
            tag_sums[to] += cand[rows[joined], 3:]
            counts[to] += 1
        fresh = rows[~joined]
        people[found:found + len(fresh), k] = cand[fresh]
        tag_sums[found:found + len(fresh)] = cand[fresh, 3:]
        counts[found:found + len(fresh)] = 1
        found += len(fresh)
    return people[:found]


def subpixel(heat: np.ndarray, k: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refine integer peaks by a parabola through the log-heatmap (exact for a Gaussian peak)."""
    _, h, w = heat.shape
    xi, yi = x.astype(int), y.astype(int)
    xl, xr = np.clip(xi - 1, 0, w - 1), np.clip(xi + 1, 0, w - 1)
    yu, yd = np.clip(yi - 1, 0, h - 1), np.clip(yi + 1, 0, h - 1)

    def logh(yy, xx):  # log of just the five pixels each peak needs
        return np.log(np.maximum(heat[k, yy, xx], 1e-10))

    c = logh(yi, xi)

    def offset(lo, hi):
        curvature = 2 * c - lo - hi
        safe = np.where(curvature > 1e-6, curvature, 1.0)
        return np.where(curvature > 1e-6, np.clip((hi - lo) / (2 * safe), -0.5, 0.5), 0.0)

    return x + offset(logh(yi, xl), logh(yi, xr)), y + offset(logh(yu, xi), logh(yd, xi))


def refine(heat: torch.Tensor, tags: torch.Tensor, people: np.ndarray) -> np.ndarray:
    """Fill each person's missing joints at the best heatmap location close in tag (HigherHRNet):
    maximise heat - round(|tag - the person's mean tag|) over the joint's map (tags as
    ``aggregate`` gives them, resized here for the missing joints only)."""
    found = torch.from_numpy(people[:, :, 2] > 0)
    person, joint = (~found).nonzero(as_tuple=True)
    if len(person) == 0:
        return people
    p = torch.from_numpy(people)
    mean_tag = (p[:, :, 3:] * found[..., None]).sum(1) / found.sum(1, keepdim=True).clamp(min=1)  # (P, D)
    needed, slot = joint.unique(return_inverse=True)
    fine = tags[needed]  # the missing joints' tag maps, at the heatmaps' resolution
    if fine.shape[1:3] != heat.shape[1:]:
        fine = F.interpolate(fine.permute(3, 0, 1, 2), size=heat.shape[1:], mode="bilinear",
                             align_corners=False).permute(1, 2, 3, 0)
    fine = fine[slot]  # (M, H, W, D)
    if tags.shape[-1] == 1:  # |tag - mean| without the general norm's extra passes
        dist = fine[..., 0].sub_(mean_tag[person][:, None]).abs_()  # (M, H, W)
    else:
        dist = torch.linalg.vector_norm(fine - mean_tag[person][:, None, None], dim=-1)
    maps = heat[joint]
    best = dist.round_().neg_().add_(maps).flatten(1).argmax(1)
    w = heat.shape[-1]
    out, where = people.copy(), (person.numpy(), joint.numpy())
    out[where + (0,)] = (best % w).numpy()
    out[where + (1,)] = (best // w).numpy()
    out[where + (2,)] = maps.flatten(1).gather(1, best[:, None])[:, 0].numpy()
    return out
