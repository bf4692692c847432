"""The pose network family: one class for the supernet and for every static subnet.

``PoseNet(arch)`` builds exactly the network ``arch`` describes. Built at a space's largest
config it is the supernet: ``set_active(config)`` switches it to any subnet, and
``extract(supernet, config)`` returns that subnet as a network of plain torch ops with the
inherited weights. Outputs follow the pose engine's convention: stride 4 with K heatmaps and K tag
maps, then (``head.multi_resolution``) stride 2 with K heatmaps; under the query head, what
``supernet.query.QueryHead`` hands out. A supernet (``PoseNet.supernet``) holds every head type of
its space over the one backbone; a subnet, its own.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from search_spaces import SearchSpace
from search_spaces.space import STEM_BLOCK, with_head_defaults
from supernet.layers import ConvBN, FusionUp, MBConv, Stage
from supernet.ops import DynamicConv2d, make_static, slice_like
from supernet.query import QueryHead
from supernet.tokens import TokenStage


class PoseNet(nn.Module):
    def __init__(self, arch: dict, num_keypoints: int = 17, joint_mask: torch.Tensor | None = None,
                 heads: tuple[str, ...] | None = None):
        super().__init__()
        self.arch = arch = with_head_defaults(arch)
        heads = heads or (arch["head"]["type"],)
        self.num_keypoints = k = num_keypoints
        stem, widths, head = arch["stem"], arch["widths"], arch["head"]["width"]
        self.stem = nn.Sequential(ConvBN(3, stem, 3, 2), MBConv(stem, stem, STEM_BLOCK))
        self.stages = nn.ModuleList(Stage(stem if s == 0 else widths[s - 1], widths[:s + 1], stage)
                                    for s, stage in enumerate(arch["stages"]))
        token = arch["token"]
        self.tokens = (TokenStage(widths[-1], token["width"], token["depth"], head, k, joint_mask)
                       if token["depth"] > 0 else None)
        cins = [widths[-1]] + [head] * (len(widths) - 2)
        self.ups = nn.ModuleList(FusionUp(cin, skip, arch["head"]) for cin, skip in zip(cins, widths[-2::-1]))
        finals = []
        if "ae" in heads:
            self.final = DynamicConv2d(head, 2 * k, 1, bias=True)
            finals.append(self.final)
            if arch["head"]["multi_resolution"]:
                self.up_high = FusionUp(head, stem, arch["head"])
                self.final_high = DynamicConv2d(head, k, 1, bias=True)
                finals.append(self.final_high)
        for final in finals:  # near-zero maps at the start, as HigherHRNet initialises its final layers
            nn.init.normal_(final.weight, std=0.001)
            nn.init.zeros_(final.bias)
        if "query" in heads:
            self.query = QueryHead(head, arch["head"]["decoder_width"], arch["head"]["decoder_depth"], k)
        self.set_active(self.arch)

    @classmethod
    def supernet(cls, space: SearchSpace, num_keypoints: int = 17, joint_mask: torch.Tensor | None = None
                 ) -> "PoseNet":
        """The weight-sharing network of ``space``: its largest config, every head type it allows."""
        return cls(space.max(), num_keypoints, joint_mask, space.choices("head.type"))

    def set_active(self, arch: dict) -> "PoseNet":
        """Switch to the subnet ``arch`` (validated by the search space; at most the built size)."""
        arch = with_head_defaults(arch)
        widths, head = arch["widths"], arch["head"]["width"]
        for s, (stage, settings) in enumerate(zip(self.stages, arch["stages"])):
            stage.set_active(widths[:s + 1], settings)
        if self.tokens is not None and arch["token"]["depth"] > 0:
            self.tokens.set_active(widths[-1], arch["token"], head)
        for up in self.ups:
            up.set_active(arch["head"])
        if arch["head"]["type"] == "query":
            self.query.set_active(arch["head"])
        elif arch["head"]["multi_resolution"]:
            self.up_high.set_active(arch["head"])
        self.active = copy.deepcopy(arch)
        return self

    def forward(self, x: torch.Tensor, seeds: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The outputs of the active head; ``seeds`` (training the query head) add queries there."""
        k = self.num_keypoints
        s2 = self.stem(x)
        feats: list[torch.Tensor] = []
        for stage in self.stages:
            feats = stage(feats, feats[-1] if feats else s2)
        classifiers = None
        if self.active["token"]["depth"] > 0:
            feats[-1], classifiers = self.tokens(feats[-1])
        y = feats[-1]
        for up, skip in zip(self.ups, feats[-2::-1]):
            y = up(y, skip)
        if self.active["head"]["type"] == "query":
            return self.query(y, seeds)
        out = self.final(y)
        if classifiers is not None:  # without a token stage the final convolutions' outputs go out as they are
            out = torch.cat([out[:, :k] + _classify(classifiers, y), out[:, k:]], dim=1)
        outputs = [out]
        if self.active["head"]["multi_resolution"]:
            y2 = self.up_high(y, s2)
            high = self.final_high(y2)
            outputs.append(high if classifiers is None else high + _classify(classifiers, y2))
        return outputs


def _classify(classifiers: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Per-keypoint classifier responses (B, K, H, W) of the token stage."""
    b, c, h, w = features.shape
    return (classifiers @ features.flatten(2)).reshape(b, -1, h, w) * c ** -0.5


def extract(supernet: PoseNet, arch: dict) -> nn.Module:
    """The subnet ``arch`` as plain torch ops with weights (and BN statistics) inherited from the
    supernet; its outputs equal ``supernet.set_active(arch)``'s."""
    joint_mask = supernet.tokens.joint_mask if supernet.tokens is not None else None
    sub = PoseNet(arch, supernet.num_keypoints, joint_mask)
    big = supernet.state_dict()
    sub.load_state_dict({name: slice_like(big[name], t.shape) for name, t in sub.state_dict().items()})
    return make_static(sub).train(supernet.training)


def new_static(arch: dict, num_keypoints: int = 17, joint_mask: torch.Tensor | None = None) -> nn.Module:
    """A freshly initialised static network of ``arch`` (plain torch ops), e.g. to train alone."""
    return make_static(PoseNet(arch, num_keypoints, joint_mask))


def build_static(arch: dict, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A static subnet rebuilt from its arch config and its own weights alone."""
    k = (state_dict["query.joint_embed"].shape[0] if "query.joint_embed" in state_dict
         else state_dict["final.bias"].shape[0] // 2)
    net = new_static(arch, k, state_dict.get("tokens.joint_mask"))
    net.load_state_dict(state_dict)
    return net.eval()
