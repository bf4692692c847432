"""The query head: people straight out of the network, no grouping (PETR and ED-Pose in 2-D, two-stage).

A centre heatmap on the stride-4 head features proposes people: its ``queries`` strongest peaks
(a max-pool NMS, as the AE decoding finds joints) seed person queries with the features there and
every joint at the centre. Each decoder layer reads the features under the current joints
(bilinear), lets every person's joint tokens and query attend to each other (the skeleton's
context) and then the queries to one another (duplicates learn to step back), and moves each
joint by a predicted offset: coarse to fine, every layer supervised (``nas.pose.matching``).
In training, extra queries seeded at the true centres (``seeds``) learn with a known assignment
beside the matched proposals: what makes a few thousand steps enough where random queries need
epochs.

Joint heatmaps from the same features place the joints: the decoder finds each person's joint
to within a few pixels, and the joint moves to the strongest pixel of its own heatmap within
``SNAP_RADIUS`` (``snap``), in the graph, each person on its own: no grouping. The heatmaps own
the backbone (the query parts read the features detached): regressed joints alone, or heatmaps
sharing the features with the query losses, stayed far below the AE head.
Widths are prefixes as everywhere in the supernet; depth keeps the first layers; the number of
queries is weight-free.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.space import SNAP_RADIUS
from supernet.heads import Head
from supernet.ops import DynamicConv2d, DynamicLayerNorm, DynamicLinear
from supernet.tokens import TokenLayer

CENTRE_RADIUS = 2  # NMS window radius of the centre map, in stride-4 pixels
CENTRE_PRIOR = -2.19  # CenterNet's initial centre logit (a probability of 0.1)
FIRST_REACH = 16.0  # the first offsets' unit in stride-4 pixels (a person spans tens of them)
STEP_REACH = 4.0  # each decoder layer's
NOT_A_PEAK = 100.0  # below every peak (logits); non-peaks still rank by value: one choice in every runtime
# The query head's operators that the work priced in ``supernet.cost`` does not stand for
# (reshapes, gathers, norms, softmax, top-k, the snap's arithmetic), counted in its exported graph
# (Constant and Identity aside): each is launched once a run, whatever its size, and a latency
# model that left them out under-predicted small query subnets by up to 18 %.
DECODER_LAYER_GLUE_OPS = 77  # 94 operators a decoder layer, 17 counted by its linears and attention
QUERY_HEAD_GLUE_OPS = 151  # 157 operators outside the layers, 6 counted


class DecoderLayer(nn.Module):
    def __init__(self, cin: int, width: int):
        super().__init__()
        self.read = DynamicLinear(cin, width)  # features under a joint -> its token
        self.person = TokenLayer(width)  # a person's query and joints attend to each other
        self.crowd = TokenLayer(width)  # queries attend to each other
        self.norm = DynamicLayerNorm(width)
        self.offset = DynamicLinear(width, 2)
        self.joint_logit = DynamicLinear(width, 1)
        self.person_logit = DynamicLinear(width, 1)
        for out in (self.offset, self.joint_logit, self.person_logit):
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    def set_active(self, width: int) -> None:
        self.read.active_out = width
        self.person.set_active(width)
        self.crowd.set_active(width)

    def forward(self, features: torch.Tensor, query: torch.Tensor, joints: torch.Tensor,
                joint_embed: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """query (B, Q, D), joints (B, Q, K, 2) in feature pixels -> the updated query, joints moved,
        joint logits (B, Q, K) and person logits (B, Q)."""
        b, q, k, _ = joints.shape
        d = query.shape[-1]
        tokens = self.read(sample(features, joints)) + joint_embed + query[:, :, None]
        t = torch.cat([query[:, :, None], tokens], dim=2).reshape(b * q, k + 1, d)
        t = self.person(t, 0, k + 1, t.new_ones(k + 1, 0, dtype=torch.bool)).reshape(b, q, k + 1, d)
        query = self.crowd(t[:, :, 0], 0, q, t.new_ones(q, 0, dtype=torch.bool))
        out = self.norm(t[:, :, 1:])
        joints = joints + STEP_REACH * self.offset(out)
        return query, joints, self.joint_logit(out)[..., 0], self.person_logit(self.norm(query))[..., 0]


def sample(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features (B, C, H, W) at points (B, Q, K, 2) in pixel coordinates (pixel centres at
    integers): (B, Q, K, C); zero outside."""
    h, w = features.shape[-2:]
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=points.dtype, device=points.device)
    grid = (points + 0.5) * scale - 1
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=False).permute(0, 2, 3, 1)


def centre_peaks(centre: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` strongest NMS peaks of a centre map (B, 1, H, W): positions (B, count, 2) as
    x, y pixels and their values (B, count)."""
    w = centre.shape[-1]
    is_peak = centre == F.max_pool2d(centre, 2 * CENTRE_RADIUS + 1, 1, CENTRE_RADIUS)
    peak = torch.where(is_peak, centre, centre - NOT_A_PEAK)  # a map with fewer peaks fills up by value
    values, index = peak.flatten(1).topk(count, dim=1)
    return torch.stack([index % w, torch.div(index, w, rounding_mode="floor")], dim=-1).float(), values


def snap(heat: torch.Tensor, joints: torch.Tensor, radius: int = SNAP_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Joints (B, Q, K, 2) moved to the strongest pixel of their heatmap (B, K, H, W) within
    ``radius`` pixels (the first in raster order of equals), then to the vertex of the parabola
    through the log-heat of it and its neighbours on each axis, as the AE decoding places its peaks
    (``nas.pose.grouping.subpixel``). Returns the joints and the heat there, clipped to [0, 1]
    (B, Q, K): each joint's score."""
    b, k, h, w = heat.shape
    q = joints.shape[1]
    steps = torch.arange(-radius, radius + 1, device=heat.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    centre = joints.round().long()
    xs = (centre[..., 0, None] + dx.flatten()).clamp(0, w - 1)  # (B, Q, K, window)
    ys = (centre[..., 1, None] + dy.flatten()).clamp(0, h - 1)
    flat = heat.flatten(2)

    def read(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        index = (y * w + x).permute(0, 2, 1, 3).reshape(b, k, -1)
        return flat.gather(2, index).reshape(b, k, q, -1).permute(0, 2, 1, 3)

    def vertex(low: torch.Tensor, middle: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        low, middle, high = (v.clamp(min=1e-10).log() for v in (low, middle, high))
        curvature = 2 * middle - low - high
        offset = ((high - low) / (2 * curvature.clamp(min=1e-6))).clamp(-0.5, 0.5)
        return torch.where(curvature > 1e-6, offset, torch.zeros_like(offset))

    values = read(xs, ys)
    best = values.argmax(-1, keepdim=True)
    x, y, peak = xs.gather(-1, best), ys.gather(-1, best), values.gather(-1, best)
    fx = x + vertex(read((x - 1).clamp(min=0), y), peak, read((x + 1).clamp(max=w - 1), y))
    fy = y + vertex(read(x, (y - 1).clamp(min=0)), peak, read(x, (y + 1).clamp(max=h - 1)))
    return torch.cat([fx, fy], dim=-1).to(joints.dtype), peak[..., 0].clamp(0, 1)


class QueryHead(nn.Module):
    """Outputs, in training, per decoder layer (coarse to fine): joints (L, B, Q, K, 2) in stride-4
    pixels, joint logits (L, B, Q, K), person logits (L, B, Q), with the centre map (B, 1, H, W),
    the queries' seed positions (B, Q, 2) and the joint heatmaps (B, K, H, W); ``seeds``
    (B, S, 2) add queries at given positions after the proposals. In evaluation, people:
    (B, Q, K + 1, 3), rows x, y, score (its heat) of every joint, snapped, and last the person's
    seed position and score, at stride 4."""

    def __init__(self, cin: int, width: int, depth: int, num_keypoints: int):
        super().__init__()
        self.centre = DynamicConv2d(cin, 1, 1, bias=True)  # logits of a person centre at each pixel
        nn.init.normal_(self.centre.weight, std=0.001)
        nn.init.constant_(self.centre.bias, CENTRE_PRIOR)
        self.embed = DynamicLinear(cin, width)
        self.where = DynamicLinear(2, width)
        self.joint_embed = nn.Parameter(torch.randn(num_keypoints, width) * 0.02)
        self.first = DynamicLinear(width, 2 * num_keypoints)
        nn.init.zeros_(self.first.weight)
        nn.init.zeros_(self.first.bias)
        self.layers = nn.ModuleList(DecoderLayer(cin, width) for _ in range(depth))
        self.heatmaps = DynamicConv2d(cin, num_keypoints, 1, bias=True)  # where joints snap; trained as the AE's
        nn.init.normal_(self.heatmaps.weight, std=0.001)
        nn.init.zeros_(self.heatmaps.bias)

    def set_active(self, head: dict) -> None:
        self.queries, self.depth, width = head["queries"], head["decoder_depth"], head["decoder_width"]
        self.embed.active_out = self.where.active_out = width
        for layer in self.layers[:self.depth]:
            layer.set_active(width)

    def forward(self, features: torch.Tensor, seeds: torch.Tensor | None = None):
        b, _, h, w = features.shape
        k = self.joint_embed.shape[0]
        heat = self.heatmaps(features)
        features = features.detach()  # the heatmaps' loss trains the backbone, the query losses this head
        centre = self.centre(features)
        positions, values = centre_peaks(centre.detach() if self.training else centre, min(self.queries, h * w))
        if seeds is not None:
            positions = torch.cat([positions, seeds.to(positions.dtype)], dim=1)
        q = positions.shape[1]
        pixel = torch.minimum(positions.clamp(min=0).long(), torch.tensor([w - 1, h - 1], device=positions.device))
        flat = (pixel[..., 1] * w + pixel[..., 0])[:, None].expand(-1, features.shape[1], -1)
        query = self.embed(features.flatten(2).gather(2, flat).transpose(1, 2))
        d = query.shape[-1]
        query = query + self.where(positions / torch.tensor([w, h], dtype=positions.dtype, device=positions.device))
        joints = positions[:, :, None] + FIRST_REACH * self.first(query).reshape(b, q, k, 2)
        embed = self.joint_embed[:, :d].to(query.dtype)
        stages = []
        for layer in self.layers[:self.depth]:
            query, joints, joint_logits, person_logits = layer(features, query, joints, embed)
            stages.append((joints, joint_logits, person_logits))
        if self.training:
            return [centre, *(torch.stack(s) for s in zip(*stages)), positions, heat]
        joints, _, person_logits = stages[-1]
        joints, scores = snap(heat, joints)
        people = torch.cat([joints, scores[..., None]], dim=-1)
        person = torch.cat([positions, person_logits.sigmoid()[..., None]], dim=-1)
        return [torch.cat([people, person[:, :, None]], dim=2)]


class Queries(Head):
    """The query head on the pose network (``QueryHead`` as ``net.query``)."""
    name = "query"
    modules = ("query",)

    def build(self, net: nn.Module, arch: dict, features: int, styles: tuple[str, ...]) -> None:
        head = arch["head"]
        net.query = QueryHead(features, head["decoder_width"], head["decoder_depth"], net.num_keypoints)

    def set_active(self, net: nn.Module, arch: dict) -> None:
        net.query.set_active(arch["head"])

    def forward(self, net: nn.Module, y: torch.Tensor, stem: torch.Tensor, classifiers: torch.Tensor | None,
                seeds: torch.Tensor | None) -> list[torch.Tensor]:
        return net.query(y, seeds)

    def keypoints_in(self, state_dict: dict[str, torch.Tensor]) -> int:
        return state_dict["query.joint_embed"].shape[0]

    def cost(self, c, arch: dict, num_keypoints: int, features: int, sides: list[int], side: int) -> None:
        head, k, pixels = arch["head"], num_keypoints, sides[0] ** 2
        q, d = min(head["queries"], pixels), head["decoder_width"]
        c.conv(features, 1, 1, pixels, bias=True, bn=False)  # the centre map
        c.conv(features, k, 1, pixels, bias=True, bn=False)  # the joint heatmaps the joints snap to
        c.linear(features, d, q)
        c.linear(2, d, q)
        c.linear(d, 2 * k, q)
        c.params += k * d  # joint embeddings
        for _ in range(head["decoder_depth"]):
            c.linear(features, d, q * k)  # features under the joints
            c.add(q * k * features)  # bilinear sampling
            c.attention_layer(d, q, k + 1)
            c.attention_layer(d, 1, q)
            c.params += 2 * d  # the outputs' layer norm
            c.linear(d, 2, q * k)
            c.linear(d, 1, q * k)
            c.linear(d, 1, q)
            c.features["ops"] += DECODER_LAYER_GLUE_OPS
        c.add(q * k * (2 * SNAP_RADIUS + 1) ** 2)  # the snap's window reads
        c.features["ops"] += QUERY_HEAD_GLUE_OPS

    def when_opened(self, net: nn.Module) -> None:
        """The query head's joint heatmaps set to the AE head's where the network has one (the same
        1x1 convolution of the same features to the same targets): the query head, never trained
        until now, places joints from the start, and only its decoder has to learn."""
        if hasattr(net, "final"):
            k = net.num_keypoints
            with torch.no_grad():
                net.query.heatmaps.weight.copy_(net.final.weight[:k])
                net.query.heatmaps.bias.copy_(net.final.bias[:k])


HEAD = Queries()
