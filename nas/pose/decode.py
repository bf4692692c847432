"""Bottom-up decoding (HigherHRNet): aggregate heatmaps, NMS, top-k, group by tags, refine.

Network outputs are a list ordered coarse to fine: the first holds K heatmaps then K tag maps,
each later one K heatmaps at twice the resolution. Decoding works at the finest resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.pose import grouping
from nas.pose.keypoints import KeypointSpec


@dataclass(frozen=True)
class DecodeConfig:
    max_people: int = 30
    detection_threshold: float = 0.4  # HigherHRNet uses 0.1; chosen on training images (README)
    tag_threshold: float = 1.0
    nms_radius: float = 4.0  # in input pixels
    use_detection_val: bool = True
    refine: bool = True


def aggregate(outputs: list[torch.Tensor], num_keypoints: int,
              flipped: list[torch.Tensor] | None = None, flip_index: list[int] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every resolution's heatmaps at the finest one (and with the flipped pass, if any).

    Returns heatmaps (B, K, H, W) and tags (B, K, H, W, D), D = 2 with flip test, else 1.
    """
    def one_pass(outs: list[torch.Tensor], flip: bool):
        size = outs[-1].shape[-2:]
        heats, tags = [], None
        for i, o in enumerate(outs):
            o = o.float()
            if flip:
                o = torch.flip(o, dims=[3])
            if o.shape[-2:] != size:
                o = F.interpolate(o, size=size, mode="bilinear", align_corners=False)
            h = o[:, :num_keypoints]
            if flip:
                h = h[:, flip_index]
            heats.append(h)
            if i == 0:
                tags = o[:, num_keypoints:2 * num_keypoints]
                tags = tags[:, flip_index] if flip else tags
        return sum(heats) / len(heats), tags  # not stack().mean(): a ReduceMean costs more in onnxruntime

    heat, tag = one_pass(outputs, False)
    if flipped is None:
        return heat, tag.unsqueeze(-1)
    heat_f, tag_f = one_pass(flipped, True)
    return (heat + heat_f) / 2, torch.stack([tag, tag_f], dim=-1)


def peaks(heat: torch.Tensor, radius: int) -> torch.Tensor:
    """Where ``heat`` (..., H, W) is the maximum of its (2r+1)^2 window: one max-pool, a single
    fused operator in an exported graph. Equal neighbouring maxima all pass here; ``grouping.drop_equal_peaks``
    keeps the first of them in raster order among the candidates (a peak midway between two
    pixels counts once), where a second max-pool over the whole map cost more than the first."""
    return heat == F.max_pool2d(heat, 2 * radius + 1, 1, radius)


def _refine(heat: torch.Tensor, tags: torch.Tensor, people: np.ndarray) -> np.ndarray:
    """Fill each person's missing joints at the best heatmap location close in tag (HigherHRNet):
    maximise heat - round(|tag - the person's mean tag|) over the joint's map."""
    found = torch.from_numpy(people[:, :, 2] > 0)
    person, joint = (~found).nonzero(as_tuple=True)
    if len(person) == 0:
        return people
    p = torch.from_numpy(people)
    mean_tag = (p[:, :, 3:] * found[..., None]).sum(1) / found.sum(1, keepdim=True).clamp(min=1)  # (P, D)
    if tags.shape[-1] == 1:  # |tag - mean| without the general norm's extra passes
        dist = tags[joint, ..., 0].sub_(mean_tag[person][:, None]).abs_()  # (M, H, W)
    else:
        dist = torch.linalg.vector_norm(tags[joint] - mean_tag[person][:, None, None], dim=-1)
    maps = heat[joint]
    best = dist.round_().neg_().add_(maps).flatten(1).argmax(1)
    w = heat.shape[-1]
    out, where = people.copy(), (person.numpy(), joint.numpy())
    out[where + (0,)] = (best % w).numpy()
    out[where + (1,)] = (best // w).numpy()
    out[where + (2,)] = maps.flatten(1).gather(1, best[:, None])[:, 0].numpy()
    return out


def candidates(heat: torch.Tensor, tags: torch.Tensor, radius: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` strongest NMS peaks of every joint's map: (B, K, M, 3) x, y, score and their
    tags (B, K, M, D), from heat (B, K, H, W) and tags (B, K, H, W, D)."""
    h, w = heat.shape[-2:]
    vals, idx = (heat * peaks(heat, radius)).flatten(2).topk(min(count, h * w), dim=2)
    tag_k = tags.flatten(2, 3).gather(2, idx[..., None].expand(-1, -1, -1, tags.shape[-1]))
    return torch.stack([(idx % w).float(), torch.div(idx, w, rounding_mode="floor").float(), vals], dim=-1), tag_k


class Candidates(nn.Module):
    """The decoding that belongs in the exported graph: heatmaps aggregated across resolutions,
    NMS, the top candidates of every joint and their tags. Its inputs are a network's outputs;
    ``group_candidates`` finishes the job outside the graph."""

    def __init__(self, num_keypoints: int, stride: int, cfg: DecodeConfig = DecodeConfig()):
        super().__init__()
        self.k, self.radius, self.count = num_keypoints, nms_radius(cfg, stride), cfg.max_people

    def forward(self, *outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heat, tags = aggregate(list(outputs), self.k)
        joints, joint_tags = candidates(heat, tags, self.radius, self.count)
        return heat, tags.squeeze(-1), joints, joint_tags.squeeze(-1)  # squeeze: a view, where [..., 0] was a Gather


def group(heat: torch.Tensor, tags: torch.Tensor, spec: KeypointSpec, stride: int,
          cfg: DecodeConfig = DecodeConfig()) -> tuple[np.ndarray, np.ndarray]:
    """People of one image from heat (K, H, W) and tags (K, H, W, D) at output ``stride``.

    Returns keypoints (P, K, 3) in that map's pixel coordinates with a score per joint, and
    a score per person (mean joint score before refinement, as HigherHRNet ranks people).
    """
    joints, joint_tags = candidates(heat[None], tags[None], nms_radius(cfg, stride), cfg.max_people)
    return group_candidates(heat, tags, joints[0].numpy(), joint_tags[0].numpy(), spec, stride, cfg)


def nms_radius(cfg: DecodeConfig, stride: int) -> int:
    """The NMS window's radius in map pixels at output ``stride``."""
    return max(1, round(cfg.nms_radius / stride))


def group_candidates(heat: torch.Tensor, tags: torch.Tensor, joints: np.ndarray, joint_tags: np.ndarray,
                     spec: KeypointSpec, stride: int, cfg: DecodeConfig = DecodeConfig()
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``group`` after its candidates: equal peaks counted once, tag matching, refinement of
    missing joints on the maps, sub-pixel peaks. joints (K, M, 3) and joint_tags (K, M, D) as
    ``candidates`` gives them, from maps at output ``stride``."""
    k = heat.shape[0]
    people = grouping.match(grouping.drop_equal_peaks(joints, nms_radius(cfg, stride)), joint_tags,
                            np.asarray(spec.group_order), cfg.detection_threshold, cfg.tag_threshold,
                            cfg.max_people, cfg.use_detection_val)
    if len(people) == 0:
        return np.zeros((0, k, 3), np.float32), np.zeros(0, np.float32)
    scores = people[:, :, 2].mean(1)
    if cfg.refine:
        people = _refine(heat, tags, people)
    out = grouping.subpixel(heat.numpy(), people)
    order = np.argsort(-scores)[:cfg.max_people]
    return out[order], scores[order]
