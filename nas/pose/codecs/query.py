"""The query head's codec: Hungarian-matched losses at every decoder layer, and people straight out
of the graph (``supernet.heads.query``): nothing runs after it, and it does not distil."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from nas.pose.codecs import Codec, People, letterboxed
from nas.pose.decode import DecodeConfig
from nas.pose.keypoints import KeypointSpec
from nas.pose.matching import query_forward_loss

STRIDE = 4  # the query head works on the stride-4 features


class Queries(Codec):
    name = "query"
    deployed_outputs = ("people",)  # (1, Q, K + 1, 3), see supernet.heads.query

    def loss(self, net, batch, cfg, sigmas, autocast):
        images, heats, masks, _, people = batch
        with autocast():
            loss = query_forward_loss(net, images, people, masks[0], sigmas, heats[0])
        zero = torch.zeros(())
        return loss, [zero, zero, zero], []

    def network_outputs(self, arch: dict) -> list[str]:
        return list(self.deployed_outputs)

    def deployed(self, net: nn.Module, cfg: DecodeConfig = DecodeConfig()) -> nn.Module:
        return PeopleOut(net)

    def decode_batch(self, outputs, matrices, size, spec, cfg, flipped) -> list[People]:
        """Flip test does not apply to people."""
        return [self.people([p[None]], m, size, spec, cfg)
                for p, m in zip(outputs[0].detach().float().cpu().numpy(), matrices)]

    def people(self, outputs: Sequence[np.ndarray], matrix: np.ndarray, size: int, spec: KeypointSpec,
               cfg: DecodeConfig) -> People:
        """Those of the (Q, K + 1, 3) rows scoring at least ``cfg.person_threshold``, best first."""
        people = np.asarray(outputs[0])[0]
        scores = people[:, -1, 2]
        keep = np.argsort(-scores)[:cfg.max_people]
        keep = keep[scores[keep] >= cfg.person_threshold]
        return letterboxed(people[keep, :-1].copy(), matrix, STRIDE), scores[keep]

    def difference(self, got, expected, arch, deployed) -> float:
        return people_difference(got[0][0], expected[0][0], arch["resolution"] // STRIDE)


class PeopleOut(nn.Module):
    """A query-head network as deployed: its people are its graph's only output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net(x))


def people_difference(got: np.ndarray, expected: np.ndarray, size: int) -> float:
    """Largest difference between two runtimes' people (Q, K + 1, 3) of the same seed position,
    coordinates relative to the map's ``size``: where two centre peaks tie, the runtimes may pick
    different ones (and go on from different places), so only people seeded alike compare (at
    least half of them must be; else infinity)."""
    seeds = {tuple(p[-1, :2]): p for p in expected}
    same = [(p, seeds[tuple(p[-1, :2])]) for p in got if tuple(p[-1, :2]) in seeds]
    if len(same) < len(expected) / 2:
        return float("inf")
    scale = np.array([1 / size, 1 / size, 1.0])
    return max(float(np.abs((a - b) * scale).max()) for a, b in same)


CODEC = Queries()
