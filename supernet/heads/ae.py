"""The associative-embedding head (HigherHRNet): K heatmaps and K tag maps at stride 4, then, with
``multi_resolution``, K heatmaps at stride 2 (LitePose's fusion deconv from the stem features, or
HigherHRNet's deconvolution of maps and features with four basic blocks). With a token stage, the
keypoint classifiers' responses add to each output's heatmaps. The people come from grouping the
tags after the network (``nas.pose.codecs.ae``)."""
from __future__ import annotations

import torch
from torch import nn

from search_spaces.space import uses_tokens
from supernet.heads import Head
from supernet.layers import FusionUp, HigherUp
from supernet.ops import DynamicConv2d
from supernet.tokens import classify


class AssociativeEmbedding(Head):
    name = "ae"
    modules = ("final", "up_high", "higher", "final_high")

    def build(self, net: nn.Module, arch: dict, features: int, styles: tuple[str, ...]) -> None:
        k, head = net.num_keypoints, arch["head"]
        net.final = DynamicConv2d(features, 2 * k, 1, bias=True)
        finals = [net.final]
        if head["multi_resolution"]:
            if "litepose" in styles:
                net.up_high = FusionUp(head["width"], arch["stem"], head)
            if "higherhrnet" in styles:
                net.higher = HigherUp(2 * k + arch["widths"][0], head["width"])
            net.final_high = DynamicConv2d(head["width"], k, 1, bias=True)
            finals.append(net.final_high)
        for final in finals:  # near-zero maps at the start, as HigherHRNet initialises its final layers
            nn.init.normal_(final.weight, std=0.001)
            nn.init.zeros_(final.bias)

    def set_active(self, net: nn.Module, arch: dict) -> None:
        if arch["head"]["multi_resolution"]:
            (net.higher if _higher(arch) else net.up_high).set_active(arch["head"])

    def forward(self, net: nn.Module, y: torch.Tensor, stem: torch.Tensor, classifiers: torch.Tensor | None,
                seeds: torch.Tensor | None) -> list[torch.Tensor]:
        k = net.num_keypoints
        out = net.final(y)
        if classifiers is not None:  # without a token stage the final convolutions' outputs go out as they are
            out = torch.cat([out[:, :k] + classify(classifiers, y), out[:, k:]], dim=1)
        outputs = [out]
        if net.active["head"]["multi_resolution"]:
            y2 = net.higher(out, y) if _higher(net.active) else net.up_high(y, stem)
            high = net.final_high(y2)
            outputs.append(high if classifiers is None else high + classify(classifiers, y2))
        return outputs

    def keypoints_in(self, state_dict: dict[str, torch.Tensor]) -> int:
        return state_dict["final.bias"].shape[0] // 2

    def cost(self, c, arch: dict, num_keypoints: int, features: int, sides: list[int], side: int) -> None:
        k, head = num_keypoints, arch["head"]["width"]
        c.conv(features, 2 * k, 1, sides[0] ** 2, bias=True, bn=False)
        outputs = [sides[0]]
        if arch["head"]["multi_resolution"]:
            if _higher(arch):  # HigherUp: a deconvolution of the maps and features, four basic blocks
                c.conv(2 * k + features, head, 4, sides[0] ** 2, transposed=True)
                for _ in range(4):
                    c.block("basic", head, head, {}, side * side)
            else:
                c.fusion_up(head, arch["stem"], arch["head"], sides[0] ** 2)
            c.conv(head, k, 1, side * side, bias=True, bn=False)
            outputs.append(side)
        if uses_tokens(arch):  # the keypoint classifiers over the head features of each output
            for s in outputs:
                c.matmul(k * head * s * s)


def _higher(arch: dict) -> bool:
    return arch["head"].get("style") == "higherhrnet"


HEAD = AssociativeEmbedding()
