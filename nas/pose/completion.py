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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.errors import PoseNASError
from nas.io import atomic_write, read_json, sha256, write_json
from nas.pose.keypoints import KeypointSpec, get_spec, person_oks

CHOSEN, REPLACED = 0.2, 0.8  # share of known joints chosen; share of those moved to their midpoint
WEIGHTS, CARD, FORMAT = "completion.safetensors", "completion.json", "posenas-skeleton-completion/1"


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
        guess = mean  # each better guess below overrides it where its joints are known
        if c >= 0:
            guess = np.where(known[:, c, None], joints[:, c], guess)
        if p >= 0:
            guess = np.where(known[:, p, None], joints[:, p], guess)
        if p >= 0 and c >= 0:
            guess = np.where((known[:, p] & known[:, c])[:, None], (joints[:, p] + joints[:, c]) / 2, guess)
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
        self.width, k2 = width, 2 * num_keypoints
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


def training_skeletons(annotation_files: list[str], synthetic: int, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, KeypointSpec]:
    """Skeletons of COCO-format files (one keypoint spec) plus ``synthetic`` figures of the
    generator (COCO's 17 joints), with their known joints and the spec."""
    from nas.pose.dataset import CocoPoseDataset
    from nas.pose.keypoints import COCO

    if synthetic < 0:
        raise PoseNASError(f"--synthetic {synthetic}: a count of figures, 0 or more")
    sets = [CocoPoseDataset(f) for f in annotation_files]
    spec = sets[0].spec if sets else COCO
    for ds in sets:
        if ds.spec.num_keypoints != spec.num_keypoints:
            raise PoseNASError(f"{ds.ann_file}: {ds.spec.name} skeletons, not {spec.name} like {sets[0].ann_file}")
    if synthetic and spec.num_keypoints != COCO.num_keypoints:
        raise PoseNASError(f"--synthetic: the generator draws COCO's 17 joints, not {spec.name}'s "
                           f"{spec.num_keypoints}; give 0")
    parts = [coco_skeletons(ds)[:2] for ds in sets] + ([synthetic_skeletons(synthetic, seed)] if synthetic else [])
    if not parts:
        raise PoseNASError("skeleton completion: give --ann files or --synthetic N skeletons to train on")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), spec


@dataclass
class Completion:
    """A trained completer for one keypoint spec, saved as safetensors weights beside a JSON card
    that binds them by SHA-256 (nothing pickled)."""
    net: SkeletonCompleter
    spec: KeypointSpec
    training: dict = field(default_factory=dict)  # what it learnt from: skeletons, steps, seed

    def __post_init__(self):
        self.parent, self.child = skeleton_tree(self.spec)

    @torch.no_grad()
    def __call__(self, joints: np.ndarray, known: np.ndarray) -> np.ndarray:
        """(P, K, 2) with the unknown joints filled in; known joints stay exactly where they are."""
        if len(joints) == 0:
            return joints.astype(np.float32)
        filled = midpoint_fill(joints, known, self.parent, self.child)
        x, centre, scale = normalise(filled)
        out = self.net(torch.from_numpy(x.astype(np.float32))).numpy() * scale + centre
        return np.where(known[..., None], joints, out).astype(np.float32)

    def refine(self, people: np.ndarray, missing_below: float) -> np.ndarray:
        """People (P, K, 3) from a head's decoding with every joint scoring under ``missing_below``
        moved to where the skeleton says it belongs (scores kept); the others stay."""
        out = people.copy()
        out[..., :2] = self(people[..., :2], people[..., 2] >= missing_below)
        return out

    def save(self, folder: str | Path) -> dict:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, tmp))
        card = {"format": FORMAT, "spec": self.spec.name, "width": self.net.width, "training": self.training,
                "sha256": sha256(folder / WEIGHTS)}
        write_json(folder / CARD, card, indent=1)
        return card

    @classmethod
    def load(cls, folder: str | Path) -> "Completion":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        card = read_json(folder / CARD, "skeleton completer card")
        if not isinstance(card, dict) or card.get("format") != FORMAT:
            raise PoseNASError(f"{folder / CARD}: not a skeleton completer card (format {FORMAT!r})")
        weights = folder / WEIGHTS
        if not weights.is_file() or sha256(weights) != card.get("sha256"):
            raise PoseNASError(f"{weights}: missing, or its SHA-256 differs from {CARD}'s (modified or corrupt)")
        try:
            spec = get_spec(card["spec"])
            net = SkeletonCompleter(spec.num_keypoints, int(card["width"]))
            net.load_state_dict(load_file(weights))
        except (KeyError, TypeError, ValueError) as e:
            raise PoseNASError(f"{folder / CARD}: field {e} missing or malformed") from None
        except (SafetensorError, RuntimeError) as e:
            raise PoseNASError(f"{weights}: not this completer's weights ({str(e).splitlines()[0]})") from None
        return cls(net.eval(), spec, card.get("training", {}))


def judge(completion: Completion, joints: np.ndarray, labelled: np.ndarray, areas: np.ndarray, drop: float = 0.2,
          draws: int = 5) -> dict[str, float]:
    """Mean OKS of people (at least 6 labelled joints) with ``drop`` of their labelled joints removed
    and completed, by the network and by the midpoint heuristic, against the originals: over every
    labelled joint, and over the dropped ones (``draws`` random drops)."""
    keep = labelled.sum(1) >= 6
    if not keep.any():
        raise PoseNASError("skeleton completion: no person with at least 6 labelled joints to judge on")
    joints, labelled, areas = joints[keep], labelled[keep], areas[keep]
    oks = {"network": [], "heuristic": [], "network_dropped": [], "heuristic_dropped": []}
    for draw in range(draws):
        dropped = labelled & (np.random.default_rng(100 + draw).random(labelled.shape) < drop)
        known = labelled & ~dropped
        for method, filled in (("network", completion(joints, known)),
                               ("heuristic", midpoint_fill(joints, known, completion.parent, completion.child))):
            oks[method].append(person_oks(filled, joints, labelled, areas, completion.spec).mean())
            oks[f"{method}_dropped"].append(person_oks(filled, joints, dropped, areas, completion.spec)[
                dropped.any(1)].mean())
    return {"people": int(keep.sum()), **{k: float(np.mean(v)) for k, v in oks.items()}}


def train_completion(joints: np.ndarray, known: np.ndarray, spec: KeypointSpec, steps: int = 2000,
                     batch: int = 256, seed: int = 0, progress: bool = False) -> Completion:
    """Fit a completer on skeletons (N, K, 2) with their known joints (N, K), mirrored at random."""
    from tqdm import trange

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    parent, child = skeleton_tree(spec)
    if len(joints) == 0 or steps < 1 or batch < 1:
        raise PoseNASError(f"skeleton completion for {spec.name}: {len(joints)} skeletons, {steps} steps of "
                           f"{batch}: needs skeletons and at least one step")
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
    return Completion(net.eval(), spec, {"skeletons": len(joints), "steps": steps, "batch": batch, "seed": seed})
