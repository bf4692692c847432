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
    person_threshold: float = 0.05  # the query head's people scoring less are dropped
    missing_below: float = 0.1  # with a skeleton completer: joints scoring less are completed


def aggregate(outputs: list[torch.Tensor], num_keypoints: int,
              flipped: list[torch.Tensor] | None = None, flip_index: list[int] | None = None,
              divided: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every resolution's heatmaps at the finest one (and with the flipped pass, if any);
    ``divided``: the outputs' heatmaps are already divided by their count (``divide_heatmaps``).

    Returns heatmaps (B, K, H, W) and the tags at the coarsest resolution, where the network makes
    them (B, K, h, w, D), D = 2 with flip test, else 1: ``tags_at`` reads them at heatmap pixels,
    which costs a fraction of resizing whole maps.
    """
    def one_pass(outs: list[torch.Tensor], flip: bool):
        size = outs[-1].shape[-2:]
        heats = []
        for o in outs:
            o = o.float()  # traced as nothing for float inputs
            if flip:
                o = torch.flip(o, dims=[3])
            h = o[:, :num_keypoints] if o.shape[1] > num_keypoints else o  # a whole-map slice is a copy in a graph
            if h.shape[-2:] != size:
                h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
            heats.append(h[:, flip_index] if flip else h)
        tags = outs[0][:, num_keypoints:2 * num_keypoints].float()
        if flip:
            tags = torch.flip(tags, dims=[3])[:, flip_index]
        total = sum(heats)  # not stack().mean(): a ReduceMean costs more in onnxruntime
        return (total if divided else total / len(heats)), tags

    heat, tag = one_pass(outputs, False)
    if flipped is None:
        return heat, tag.unsqueeze(-1)
    heat_f, tag_f = one_pass(flipped, True)
    return (heat + heat_f) / 2, torch.stack([tag, tag_f], dim=-1)


def divide_heatmaps(outputs: list[torch.Tensor], num_keypoints: int) -> list[torch.Tensor]:
    """Network outputs with their heatmaps divided by the number of resolutions, for
    ``aggregate(..., divided=True)``: in a deployed graph onnxruntime folds this constant Mul into
    the final convolutions, where dividing the aggregated maps was a pass over the finest one. For
    two resolutions the result is bitwise the same (a division by two is exact)."""
    share = 1 / len(outputs)
    if share == 1:
        return list(outputs)
    scale = torch.ones(outputs[0].shape[1], 1, 1)
    scale[:num_keypoints] = share  # the tags keep their scale
    return [o * (scale if o.shape[1] > num_keypoints else share) for o in outputs]


def tags_at(tags: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Tags (B, K, h, w, D) read at pixels ``x``, ``y`` (B, K, M) of maps of ``size`` (H, W): the
    values that bilinear resizing of the tag maps to that size (``F.interpolate``, half-pixel
    centres) would hold there, without resizing them. Returns (B, K, M, D)."""
    (h, w), d = tags.shape[2:4], tags.shape[-1]
    flat = tags.flatten(2, 3)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (yy * w + xx)[..., None].expand(-1, -1, -1, d))

    if (h, w) == tuple(size):
        return at(y, x)

    def axis(v: torch.Tensor, n: int, big: int):
        src = ((v.float() + 0.5) * (n / big) - 0.5).clamp(min=0)
        low = src.floor()
        high_weight = (src - low)[..., None]
        low = low.long()
        return low, (low + 1).clamp(max=n - 1), 1 - high_weight, high_weight

    x0, x1, wx0, wx1 = axis(x, w, size[1])
    y0, y1, wy0, wy1 = axis(y, h, size[0])
    return wy0 * (wx0 * at(y0, x0) + wx1 * at(y0, x1)) + wy1 * (wx0 * at(y1, x0) + wx1 * at(y1, x1))


def peaks(heat: torch.Tensor, radius: int) -> torch.Tensor:
    """Where ``heat`` (..., H, W) is the maximum of its (2r+1)^2 window: one max-pool, a single
    fused operator in an exported graph. Equal neighbouring maxima all pass here;
    ``grouping.drop_equal_peaks`` keeps the first of them in raster order among the candidates (a
    peak midway between two pixels counts once), where a second max-pool over the whole map cost
    more than the first."""
    return heat == F.max_pool2d(heat, 2 * radius + 1, 1, radius)


def candidates(heat: torch.Tensor, tags: torch.Tensor, radius: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` strongest NMS peaks of every joint's map: (B, K, M, 3) x, y, score and their
    tags (B, K, M, D), from heat (B, K, H, W) and tags as ``aggregate`` gives them.

    Two peaks never share a 2x2 block unless they are equal (each is the maximum of a window
    holding the other; ``grouping.drop_equal_peaks`` keeps the first of equals anyway), so the top-k
    runs over block maxima, a quarter of the pixels, and the block's first maximum is the peak."""
    h, w = heat.shape[-2:]
    peak = heat * peaks(heat, radius)
    blocks = F.max_pool2d(peak, 2, 2, ceil_mode=True)
    bw = blocks.shape[-1]
    vals, block = blocks.flatten(2).topk(min(count, blocks.shape[-2] * bw), dim=2)
    x0, y0 = (block % bw) * 2, torch.div(block, bw, rounding_mode="floor") * 2
    xs = torch.stack([x0, (x0 + 1).clamp(max=w - 1)] * 2, dim=-1)  # the block's pixels in raster order
    ys = torch.stack([y0, y0, (y0 + 1).clamp(max=h - 1), (y0 + 1).clamp(max=h - 1)], dim=-1)
    first = peak.flatten(2).gather(2, (ys * w + xs).flatten(2)).unflatten(2, xs.shape[2:]).argmax(-1, keepdim=True)
    x, y = xs.gather(3, first)[..., 0], ys.gather(3, first)[..., 0]
    return torch.stack([x.float(), y.float(), vals], dim=-1), tags_at(tags, x, y, (h, w))


class Candidates(nn.Module):
    """The decoding that belongs in the exported graph: heatmaps aggregated across resolutions,
    NMS, the top candidates of every joint and their tags. Its inputs are a network's outputs
    through ``divide_heatmaps``; ``group_candidates`` finishes the job outside the graph."""

    def __init__(self, num_keypoints: int, stride: int, cfg: DecodeConfig = DecodeConfig()):
        super().__init__()
        self.k, self.radius, self.count = num_keypoints, nms_radius(cfg, stride), cfg.max_people

    def forward(self, *outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heat, tags = aggregate(list(outputs), self.k, divided=True)
        joints, joint_tags = candidates(heat, tags, self.radius, self.count)
        return heat, tags.squeeze(-1), joints, joint_tags.squeeze(-1)  # squeeze: a view, where [..., 0] was a Gather


def group(heat: torch.Tensor, tags: torch.Tensor, spec: KeypointSpec, stride: int,
          cfg: DecodeConfig = DecodeConfig()) -> tuple[np.ndarray, np.ndarray]:
    """People of one image from heat (K, H, W) and tags (K, h, w, D) as ``aggregate`` gives them,
    at output ``stride``.

    Returns keypoints (P, K, 3) in that map's pixel coordinates with a score per joint, and
    a score per person (mean joint score before refinement, as HigherHRNet ranks people).
    """
    joints, joint_tags = candidates(heat[None], tags[None], nms_radius(cfg, stride), cfg.max_people)
    return group_candidates(heat, tags, joints[0].numpy(), joint_tags[0].numpy(), spec, stride, cfg)


def finest_stride(multi_resolution: bool) -> int:
    """The stride of a network's finest output, where decoding works."""
    return 2 if multi_resolution else 4


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
    heat = heat.numpy()
    if cfg.refine:
        people = grouping.refine(heat, tags.numpy(), people)
    out = grouping.subpixel(heat, people)
    order = np.argsort(-scores)[:cfg.max_people]
    return out[order], scores[order]
