"""Joint refinement by masked skeleton completion: a small network fills in the joints a pose
head missed from where the others are, trained on skeletons alone (no images), BERT-style.

Masking: a share of a skeleton's known joints is chosen; most of those are replaced by the
midpoint of their parent and child in the skeleton tree (their parent, for a leaf), the rest are
left as they are, and the loss counts the chosen joints only. At run time a missing joint enters
the same way, at its midpoint, so the network sees what it was trained on. ``midpoint_fill``
alone is the heuristic the network has to beat.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nas.pose.keypoints import KeypointSpec

CHOSEN, REPLACED = 0.2, 0.8  # share of known joints chosen; share of those moved to their midpoint


def skeleton_tree(spec: KeypointSpec) -> tuple[np.ndarray, np.ndarray]:
    """Parent and first child of every joint (-1: none) in the breadth-first tree of the spec's
    skeleton from its first grouping joint (the nose for COCO)."""
    k = spec.num_keypoints
    neighbours = [[] for _ in range(k)]
    for a, b in spec.skeleton:
        neighbours[a].append(b)
        neighbours[b].append(a)
    parent, child = np.full(k, -1), np.full(k, -1)
    root = spec.group_order[0]
    seen, queue = {root}, deque([root])
    while queue:
        j = queue.popleft()
        for n in sorted(neighbours[j]):
            if n not in seen:
                seen.add(n)
                parent[n] = j
                if child[j] < 0:
                    child[j] = n
                queue.append(n)
    return parent, child


def midpoint_fill(joints: np.ndarray, known: np.ndarray, parent: np.ndarray, child: np.ndarray) -> np.ndarray:
    """(P, K, 2) with every unknown joint at the midpoint of its known parent and child, at the one
    of them that is known, else at the mean of the person's known joints."""
    out = joints.astype(np.float32).copy()
    mean = (joints * known[..., None]).sum(1) / np.maximum(known.sum(1, keepdims=True), 1)
    for j in range(joints.shape[1]):
        p, c = parent[j], child[j]
        p_ok = known[:, p] if p >= 0 else np.zeros(len(joints), bool)
        c_ok = known[:, c] if c >= 0 else np.zeros(len(joints), bool)
        both = (joints[:, p] + joints[:, c]) / 2 if p >= 0 and c >= 0 else mean
        guess = np.where((p_ok & c_ok)[:, None], both,
                         np.where(p_ok[:, None], joints[:, p] if p >= 0 else mean,
                                  np.where(c_ok[:, None], joints[:, c] if c >= 0 else mean, mean)))
        out[:, j] = np.where(known[:, j, None], joints[:, j], guess)
    return out


def mask_skeletons(joints: np.ndarray, known: np.ndarray, parent: np.ndarray, child: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (P, K, 2) and the chosen joints (P, K): ``CHOSEN`` of each person's known joints (at
    least one), ``REPLACED`` of those moved to their midpoint (computed without them), the rest
    left as they are; unknown joints go in at their midpoint and are never chosen."""
    chosen = known & (rng.random(known.shape) < CHOSEN)
    for p in np.flatnonzero(~chosen.any(1) & known.any(1)):  # every person teaches something
        chosen[p, rng.choice(np.flatnonzero(known[p]))] = True
    replaced = chosen & (rng.random(known.shape) < REPLACED)
    return midpoint_fill(joints, known & ~replaced, parent, child), chosen


def normalise(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joints (P, K, 2) centred on their mean and divided by their RMS spread (so that the network
    sees poses, not places or sizes), with the centre and scale to undo it."""
    centre = joints.mean(1, keepdims=True)
    scale = np.sqrt(((joints - centre) ** 2).sum(-1).mean(1, keepdims=True))[..., None] + 1e-6
    return (joints - centre) / scale, centre, scale


class SkeletonCompleter(nn.Module):
    """An MLP from a normalised skeleton (K x 2, missing joints at their midpoints) to a correction
    of every joint; only the corrections of missing joints are used."""

    def __init__(self, num_keypoints: int, width: int = 256):
        super().__init__()
        k2 = 2 * num_keypoints
        self.mlp = nn.Sequential(nn.Linear(k2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, k2))

    def forward(self, skeletons: torch.Tensor) -> torch.Tensor:
        return skeletons + self.mlp(skeletons.flatten(1)).view_as(skeletons)


def masked_joint_loss(predicted: torch.Tensor, target: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance over the chosen joints only: the others teach nothing."""
    errors = (predicted - target).abs().sum(-1)
    return (errors * chosen).sum() / chosen.sum().clamp(min=1)


def coco_skeletons(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every annotated person of a ``CocoPoseDataset``: joints (N, K, 2), which are labelled
    (N, K) and areas (N,)."""
    people = [ds.people(i) for i in ds.image_ids]
    kps = np.concatenate([p[0] for p in people]) if people else np.zeros((0, ds.spec.num_keypoints, 3))
    return kps[..., :2], kps[..., 2] > 0, np.concatenate([p[1] for p in people]) if people else np.zeros(0)


def synthetic_skeletons(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Skeletons (N, 17, 2) of the synthetic generator's figures and which joints exist (a figure
    seen from behind has no face joints): training data that costs no images."""
    from nas.pose.synth import sample_person

    rng = np.random.default_rng(seed)
    people = [sample_person(rng, rng.uniform(64, 192, 2), rng.uniform(60, 200)) for _ in range(count)]
    return np.stack([p.joints for p in people]).astype(np.float32), np.stack([p.face_visible for p in people])


@dataclass
class Completion:
    """A trained completer with what it needs at run time."""
    net: SkeletonCompleter
    parent: np.ndarray
    child: np.ndarray

    @torch.no_grad()
    def __call__(self, joints: np.ndarray, known: np.ndarray) -> np.ndarray:
        """(P, K, 2) with the unknown joints filled in; known joints stay exactly where they are."""
        if len(joints) == 0:
            return joints.astype(np.float32)
        filled = midpoint_fill(joints, known, self.parent, self.child)
        x, centre, scale = normalise(filled)
        out = self.net(torch.from_numpy(x.astype(np.float32))).numpy() * scale + centre
        return np.where(known[..., None], joints, out).astype(np.float32)


def train_completion(joints: np.ndarray, known: np.ndarray, spec: KeypointSpec, steps: int = 2000,
                     batch: int = 256, seed: int = 0, progress: bool = False) -> Completion:
    """Fit a completer on skeletons (N, K, 2) with their known joints (N, K), mirrored at random."""
    from tqdm import trange

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    parent, child = skeleton_tree(spec)
    net = SkeletonCompleter(spec.num_keypoints)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    flip = spec.flip_index
    for _ in trange(steps, desc="completion", disable=not progress):
        pick = rng.integers(0, len(joints), batch)
        target, seen = joints[pick].copy(), known[pick].copy()
        mirror = rng.random(batch) < 0.5
        target[mirror], seen[mirror] = target[mirror][:, flip] * [-1, 1], seen[mirror][:, flip]
        inputs, chosen = mask_skeletons(target, seen, parent, child, rng)
        x, centre, scale = normalise(inputs)
        y = (target - centre) / scale
        loss = masked_joint_loss(net(torch.from_numpy(x.astype(np.float32))), torch.from_numpy(y.astype(np.float32)),
                                 torch.from_numpy(chosen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return Completion(net.eval(), parent, child)
