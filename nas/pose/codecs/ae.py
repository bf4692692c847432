"""The associative-embedding head's codec (HigherHRNet): heatmap and tag losses, distillation from
the teacher's heatmaps, candidates decoded in the graph and grouped by their tags after it."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nas.pose.codecs import Codec, People, letterboxed
from nas.pose.crowd import crowd, spec_of
from nas.pose.decode import (
    Candidates,
    DecodeConfig,
    aggregate,
    divide_heatmaps,
    finest_stride,
    group,
    group_candidates,
    nms_radius,
    tags_at,
)
from nas.pose.grouping import drop_equal_peaks
from nas.pose.keypoints import KeypointSpec
from nas.pose.losses import distillation_loss, heatmaps, pose_loss
from nas.pose.targets import oracle_outputs


class AssociativeEmbedding(Codec):
    name = "ae"
    deployed_outputs = ("heatmaps", "tags", "candidates", "candidate_tags")
    distils = True

    def loss(self, net, batch, cfg, sigmas, autocast):
        images, heats, masks, joints, _ = batch
        with autocast():
            outputs = net(images)
        outputs = [o.float() for o in outputs]
        loss, *parts = pose_loss(outputs, heats, masks, joints, net.num_keypoints, cfg.ae_weight,
                                 cfg.background_weight)
        return loss, parts, outputs

    def teacher_maps(self, outputs, num_keypoints):
        return heatmaps(outputs, num_keypoints)

    def distillation(self, outputs, teacher, masks, num_keypoints):
        return distillation_loss(outputs, teacher, masks, num_keypoints)

    def network_outputs(self, arch: dict) -> list[str]:
        return ["stride4", "stride2"][:1 + arch["head"]["multi_resolution"]]

    def deployed(self, net: nn.Module, cfg: DecodeConfig = DecodeConfig()) -> nn.Module:
        return Deployed(net, cfg)

    def decoding_alone(self, num_keypoints, resolution, multi_resolution):
        shapes = [(1, 2 * num_keypoints, resolution // 4, resolution // 4)]
        if multi_resolution:
            shapes.append((1, num_keypoints, resolution // 2, resolution // 2))
        return Candidates(num_keypoints, finest_stride(multi_resolution)), shapes

    def after_graph(self, num_keypoints: int, resolution: int, multi_resolution: bool, people: int
                    ) -> Callable[[], object]:
        """``group_candidates`` on perfect network outputs of ``people`` people (``crowd``)."""
        strides = (4, 2) if multi_resolution else (4,)
        outputs = oracle_outputs(crowd(people, resolution, num_keypoints), resolution, num_keypoints, strides)
        with torch.no_grad():
            heat, tags, joints, joint_tags = Candidates(num_keypoints, strides[-1])(
                *divide_heatmaps(outputs, num_keypoints))
        args = (heat[0], tags[0][..., None], joints[0].numpy(), joint_tags[0][..., None].numpy(),
                spec_of(num_keypoints), strides[-1])
        return lambda: group_candidates(*args)

    def postprocess_key(self, arch: dict) -> str:
        """Grouping's cost depends on the output maps' size: the resolution and the head's outputs."""
        return f"{arch['resolution']}px/{'two' if arch['head']['multi_resolution'] else 'one'}-resolution head"

    def decode_batch(self, outputs, matrices, size, spec, cfg, flipped) -> list[People]:
        heat, tags = aggregate([o.detach().float().cpu() for o in outputs], spec.num_keypoints,
                               [o.detach().float().cpu() for o in flipped] if flipped else None, spec.flip_index)
        stride = size / heat.shape[-1]
        people = []
        for i, matrix in enumerate(matrices):
            kps, scores = group(heat[i], tags[i], spec, int(round(stride)), cfg)
            people.append((letterboxed(kps, matrix, stride), scores))
        return people

    def people(self, outputs: Sequence[np.ndarray], matrix: np.ndarray, size: int, spec: KeypointSpec,
               cfg: DecodeConfig) -> People:
        """The grouping that runs outside the graph, on (heatmaps, tags, candidates, candidate tags)."""
        heat, tags, joints, joint_tags = (np.asarray(o)[0] for o in outputs)
        stride = size / heat.shape[-1]
        kps, scores = group_candidates(torch.from_numpy(heat), torch.from_numpy(tags)[..., None], joints,
                                       joint_tags[..., None], spec, int(round(stride)), cfg)
        return letterboxed(kps, matrix, stride), scores

    def difference(self, got, expected, arch, deployed) -> float:
        """Over all outputs alike for the network's maps; a deployed model's candidates as
        ``candidates_difference`` compares them."""
        if deployed:
            return candidates_difference(got, expected, nms_radius(DecodeConfig(), finest_stride(
                arch["head"]["multi_resolution"])))
        return max(float(np.abs(o - e).max()) for o, e in zip(got, expected))


class Deployed(nn.Module):
    """A network with the decoding that lives in its graph (``Candidates``: heatmaps aggregated
    across resolutions, NMS, each joint's top candidates and their tags): what ``model.onnx`` holds
    and what deployment latency times. ``group_candidates`` turns its outputs into people."""

    def __init__(self, net: nn.Module, cfg: DecodeConfig = DecodeConfig()):
        super().__init__()
        self.net = net
        self.candidates = Candidates(net.num_keypoints, finest_stride(net.arch["head"]["multi_resolution"]), cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.candidates(*divide_heatmaps(self.net(x), self.net.num_keypoints))


def candidates_difference(got: Sequence[np.ndarray], expected: Sequence[np.ndarray], radius: int) -> float:
    """Largest difference between two runtimes' deployed outputs (heat, tags, candidates and their
    tags) of one input, blind to how each breaks ties: the maps compare alike; each runtime's peaks
    are read against the other's maps (score and tag where it put them); and the peak scores compare
    ranked. Top-k may keep either of two near-equal peaks (a pair of equal neighbours, or the many
    small peaks of heatmap tails competing for the last places), so positions never compare directly."""
    maps = max(float(np.abs(g - e).max()) for g, e in zip(got[:2], expected[:2]))
    return max(maps, misread(got, expected), misread(expected, got), ranked_difference(got[2], expected[2], radius))


def misread(one: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Largest difference between ``one``'s candidate peaks (score and tag) and ``other``'s maps at
    their pixels; non-peaks score 0 wherever top-k put them, so they are not read."""
    heat, tags = other[:2]
    joints, joint_tags = one[2:]
    x, y = (torch.from_numpy(joints[..., i]).long() for i in (0, 1))
    peak = joints[..., 2] > 0
    b, k, m = np.nonzero(peak)
    scores = np.abs(joints[..., 2][peak] - heat[b, k, y.numpy()[peak], x.numpy()[peak]])
    there = tags_at(torch.from_numpy(tags)[..., None], x, y, heat.shape[-2:])[..., 0].numpy()
    return float(max(scores.max(initial=0), np.abs(joint_tags - there)[peak].max(initial=0)))


def ranked_difference(got: np.ndarray, expected: np.ndarray, radius: int) -> float:
    """Largest difference between two runtimes' candidate scores (B, K, M, 3) ranked per joint, equal
    peaks counted once (``drop_equal_peaks``): where one runtime saw a pair of equal peaks, it kept one
    candidate fewer, so only the places both filled with distinct peaks compare."""
    ranked, dropped = [], []
    for joints in (got[0], expected[0]):
        distinct = drop_equal_peaks(joints, radius)[..., 2]
        ranked.append(-np.sort(-distinct, axis=-1))
        dropped.append(((joints[..., 2] > 0) & (distinct == 0)).sum(-1))
    places = np.arange(got.shape[-2]) < got.shape[-2] - np.maximum(*dropped)[:, None]
    return float(np.abs(ranked[0] - ranked[1])[places].max(initial=0))


CODEC = AssociativeEmbedding()
