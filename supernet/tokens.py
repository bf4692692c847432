"""The token stage (Improved TokenPose) on the lowest-resolution features, with attention pruning.

Tokens are one learned token per keypoint followed by one visual token per feature pixel (a linear
embedding plus a fixed 2-D sine-cosine position code). In each attention layer, every query keeps
only its top ``ceil(keep_ratio * N)`` visual-token scores (the rest are masked before softmax),
and keypoint queries see only the keypoint tokens the joint mask allows (the joint itself, its
skeleton neighbours and its mirror joint); visual queries see every keypoint token.

How the output feeds the heatmaps (our choice): visual tokens go back onto the feature map as a
residual (global context for the conv head), and each keypoint token becomes a per-keypoint
classifier: a linear map to the head's width whose dot product with the head features at every
pixel adds to that keypoint's heatmap, at stride 4 and (when present) stride 2. Both maps start at
zero, so a freshly opened token stage does not disturb the conv path.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.space import TOKEN_HEAD_DIM as HEAD_DIM
from supernet.ops import DynamicLayerNorm, DynamicLinear

MLP_RATIO = 2


def sincos_position(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """(h*w, dim) position code whose first channels do not depend on ``dim``: elastic widths
    share a prefix, as their weights do."""
    i = torch.arange(dim // 4, device=device, dtype=torch.float32)
    omega = 1.0 / (100.0 ** (i / 8.0))
    y, x = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    y, x = y.reshape(-1, 1) * omega, x.reshape(-1, 1) * omega
    return torch.stack([y.sin(), y.cos(), x.sin(), x.cos()], dim=-1).reshape(h * w, -1)


def prune_scores(scores: torch.Tensor, num_keypoints: int, keep: int, allowed: torch.Tensor) -> torch.Tensor:
    """Mask attention scores (B, heads, T, T): per query row, the visual columns outside the row's
    top ``keep``, and the keypoint columns that ``allowed`` (T, K) forbids."""
    low = torch.finfo(scores.dtype).min
    kp, vis = scores[..., :num_keypoints], scores[..., num_keypoints:]
    if keep < vis.shape[-1]:
        kth = vis.topk(keep, dim=-1).values[..., -1:]
        vis = vis.masked_fill(vis < kth, low)
    return torch.cat([kp.masked_fill(~allowed, low), vis], dim=-1)


class TokenLayer(nn.Module):
    """Pre-norm transformer layer with elastic width and pruned attention."""

    def __init__(self, width: int):
        super().__init__()
        self.norm1, self.norm2 = DynamicLayerNorm(width), DynamicLayerNorm(width)
        self.q, self.k, self.v, self.proj = (DynamicLinear(width, width) for _ in range(4))
        self.fc1 = DynamicLinear(width, width * MLP_RATIO)
        self.fc2 = DynamicLinear(width * MLP_RATIO, width)

    def set_active(self, width: int) -> None:
        for linear in (self.q, self.k, self.v, self.proj, self.fc2):
            linear.active_out = width
        self.fc1.active_out = width * MLP_RATIO

    def forward(self, t: torch.Tensor, num_keypoints: int, keep: int, allowed: torch.Tensor) -> torch.Tensor:
        b, n, e = t.shape
        heads = e // HEAD_DIM
        y = self.norm1(t)
        q, k, v = (f(y).reshape(b, n, heads, HEAD_DIM).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = prune_scores(q @ k.transpose(-2, -1) * HEAD_DIM ** -0.5, num_keypoints, keep, allowed)
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, e)
        t = t + self.proj(attended)
        return t + self.fc2(F.gelu(self.fc1(self.norm2(t))))


class TokenStage(nn.Module):
    def __init__(self, cin: int, width: int, depth: int, head_width: int, num_keypoints: int,
                 joint_mask: torch.Tensor | None = None):
        super().__init__()
        self.embed = DynamicLinear(cin, width)
        self.keypoint_tokens = nn.Parameter(torch.randn(num_keypoints, width) * 0.02)
        self.layers = nn.ModuleList(TokenLayer(width) for _ in range(depth))
        self.norm = DynamicLayerNorm(width)
        self.to_feature = DynamicLinear(width, cin)
        self.to_classifier = DynamicLinear(width, head_width)
        for linear in (self.to_feature, self.to_classifier):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        mask = torch.ones(num_keypoints, num_keypoints, dtype=torch.bool) if joint_mask is None else joint_mask
        self.register_buffer("joint_mask", torch.as_tensor(mask, dtype=torch.bool).clone())

    def set_active(self, cin: int, token: dict, head_width: int) -> None:
        self.active_depth, self.keep_ratio = token["depth"], token["keep_ratio"]
        self.embed.active_out = token["width"]
        for layer in self.layers[:self.active_depth]:
            layer.set_active(token["width"])
        self.to_feature.active_out = cin
        self.to_classifier.active_out = head_width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features with global context added, and per-keypoint classifiers (B, K, head width)."""
        b, c, h, w = x.shape
        k = self.joint_mask.shape[0]
        visual = self.embed(x.flatten(2).transpose(1, 2))
        e = visual.shape[-1]
        visual = visual + sincos_position(h, w, e, x.device).to(visual.dtype)
        t = torch.cat([self.keypoint_tokens[:, :e].to(visual.dtype).expand(b, -1, -1), visual], dim=1)
        keep = max(1, math.ceil(self.keep_ratio * h * w))
        allowed = torch.cat([self.joint_mask, self.joint_mask.new_ones(h * w, k)], dim=0)
        for layer in self.layers[:self.active_depth]:
            t = layer(t, k, keep, allowed)
        t = self.norm(t)
        x = x + self.to_feature(t[:, k:]).transpose(1, 2).reshape(b, c, h, w)
        return x, self.to_classifier(t[:, :k])


def classify(classifiers: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Per-keypoint classifier responses (B, K, H, W) of the token stage over head features."""
    b, c, h, w = features.shape
    return (classifiers @ features.flatten(2)).reshape(b, -1, h, w) * c ** -0.5


def joint_mask(num_keypoints: int, skeleton: list[tuple[int, int]], flip_pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Which keypoint tokens each keypoint token may attend to: itself, skeleton neighbours, mirror."""
    mask = torch.eye(num_keypoints, dtype=torch.bool)
    for a, b in list(skeleton) + list(flip_pairs):
        mask[a, b] = mask[b, a] = True
    return mask
