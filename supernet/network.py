"""The pose network family: one class for the supernet and for every static subnet.

``PoseNet(arch)`` builds exactly the network ``arch`` describes. Built at a space's largest
config it is the supernet: ``set_active(config)`` switches it to any subnet, and
``extract(supernet, config)`` returns that subnet as a network of plain torch ops with the
inherited weights. Its outputs are its head's (``supernet.heads``: one class per head type owns
its modules here, their forward pass and cost). Under LitePose's head style the stride-4 features come
from a fusion deconv head climbing from the lowest branch; under HigherHRNet's they are the first
branch's after the last module fused every branch into it. A supernet (``PoseNet.supernet``)
holds every block type, head style and head type of its space over the one backbone; a subnet,
its own.

The stem is a stride-2 3x3 convolution, followed in MBConv networks by LitePose's depthwise-
separable step; in networks of HRNet blocks the first stage's dense transition is HRNet's second
stem convolution.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from search_spaces import SearchSpace
from search_spaces.space import STEM_BLOCK, keeps_stride, uses_tokens, with_defaults
from supernet.heads import head_named, head_of
from supernet.layers import ConvBN, FusionUp, MBConv, Stage
from supernet.ops import DynamicConv2d, make_static, slice_like
from supernet.tokens import TokenStage


class PoseNet(nn.Module):
    def __init__(self, arch: dict, num_keypoints: int = 17, joint_mask: torch.Tensor | None = None,
                 space: SearchSpace | None = None):
        """``space``: build every block and head type it allows (a supernet); otherwise ``arch``'s."""
        super().__init__()
        self.arch = arch = with_defaults(arch)
        heads = space.choices("head.type") if space else (arch["head"]["type"],)
        styles = space.choices("head.style") if space else (arch["head"]["style"],)
        blocks = [space.choices(f"stages.{s}.block") if space else (stage["block"],)
                  for s, stage in enumerate(arch["stages"])]
        last = len(arch["stages"]) - 1
        kept = space.choices(f"stages.{last}.keep_stride") if space else (keeps_stride(arch["stages"][-1]),)
        scales = tuple(1 if k else 2 for k in kept)  # of the head's first step; a supernet builds its largest first
        self.num_keypoints = k = num_keypoints
        stem, widths, head = arch["stem"], arch["widths"], arch["head"]["width"]
        lite = [MBConv(stem, stem, STEM_BLOCK)] if "mbconv" in blocks[0] else []  # LitePose's separable step
        self.stem = nn.Sequential(ConvBN(3, stem, 3, 2), *lite)
        handed_on = max(4 * stem if t == "bottleneck" else widths[0] for t in blocks[0])  # by the first stage
        self.stages = nn.ModuleList()
        for s, stage in enumerate(arch["stages"]):
            cin = stem if s == 0 else handed_on if s == 1 else widths[s - 1]
            adapt = handed_on if s == 1 and "bottleneck" in blocks[0] else None
            into_first = s == last and styles == ("higherhrnet",)  # a supernet builds every exchange
            self.stages.append(Stage(cin, widths[:s + 1], stage, blocks[s], adapt, into_first))
        token = arch["token"]
        self.tokens = (TokenStage(widths[-1], token["width"], token["depth"], head, k, joint_mask)
                       if token["depth"] > 0 and "litepose" in styles else None)
        if "litepose" in styles:
            cins = [widths[-1]] + [head] * (len(widths) - 2)
            self.ups = nn.ModuleList(FusionUp(cin, skip, arch["head"], scales if b == 0 else (2,))
                                     for b, (cin, skip) in enumerate(zip(cins, widths[-2::-1])))
        features = max(head if style == "litepose" else widths[0] for style in styles)  # at stride 4
        for name in heads:
            head_named(name).build(self, arch, features, styles)
        self.set_active(self.arch)

    @classmethod
    def supernet(cls, space: SearchSpace, num_keypoints: int = 17, joint_mask: torch.Tensor | None = None
                 ) -> "PoseNet":
        """The weight-sharing network of ``space``: its largest config, every head type it allows."""
        return cls(space.max(), num_keypoints, joint_mask, space)

    def set_active(self, arch: dict) -> "PoseNet":
        """Switch to the subnet ``arch`` (validated by the search space; at most the built size)."""
        arch = with_defaults(arch)
        stem, widths, head = arch["stem"], arch["widths"], arch["head"]["width"]
        self.stem[0].set_active(stem)
        first = arch["stages"][0]["block"]
        if first == "mbconv":
            self.stem[1].set_active(stem, STEM_BLOCK)
        higher = arch["head"]["style"] == "higherhrnet"
        for s, (stage, settings) in enumerate(zip(self.stages, arch["stages"])):
            own = [4 * stem] if s == 0 and first == "bottleneck" else widths[:s + 1]
            stage.set_active(own, settings, s == 1 and first == "bottleneck", higher and s == len(self.stages) - 1)
        if uses_tokens(arch):
            self.tokens.set_active(widths[-1], arch["token"], head)
        for b, up in enumerate(self.ups if not higher else ()):
            up.set_active(arch["head"], 1 if b == 0 and keeps_stride(arch["stages"][-1]) else 2)
        head_of(arch).set_active(self, arch)
        self.active = copy.deepcopy(arch)
        return self

    def forward(self, x: torch.Tensor, seeds: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The outputs of the active head; ``seeds`` (training the query head) add queries there."""
        s2 = self.stem[0](x)
        if self.active["stages"][0]["block"] == "mbconv":
            s2 = self.stem[1](s2)
        feats: list[torch.Tensor] = []
        for stage in self.stages:
            feats = stage(feats, feats[-1] if feats else s2)
        classifiers = None
        if uses_tokens(self.active):
            feats[-1], classifiers = self.tokens(feats[-1])
        higher = self.active["head"]["style"] == "higherhrnet"
        y = feats[0] if higher else feats[-1]
        for up, skip in zip(() if higher else self.ups, feats[-2::-1]):
            y = up(y, skip)
        return head_of(self.active).forward(self, y, s2, classifiers, seeds)


def extract(supernet: PoseNet, arch: dict) -> nn.Module:
    """The subnet ``arch`` as plain torch ops with weights (and BN statistics) inherited from the
    supernet; its outputs equal ``supernet.set_active(arch)``'s."""
    joint_mask = supernet.tokens.joint_mask if supernet.tokens is not None else None
    sub = PoseNet(arch, supernet.num_keypoints, joint_mask)
    big, ops = supernet.state_dict(), dict(supernet.named_modules())

    def inherited(name: str, shape: torch.Size) -> torch.Tensor:
        owner, _, leaf = name.rpartition(".")
        if leaf == "weight" and isinstance(ops[owner], DynamicConv2d):  # the kernel transformed to its size
            return slice_like(ops[owner].kernel_weight(shape[-1]).detach(), shape)
        return slice_like(big[name], shape)

    sub.load_state_dict({name: inherited(name, t.shape) for name, t in sub.state_dict().items()})
    return make_static(sub).train(supernet.training)


def new_static(arch: dict, num_keypoints: int = 17, joint_mask: torch.Tensor | None = None) -> nn.Module:
    """A freshly initialised static network of ``arch`` (plain torch ops), e.g. to train alone."""
    return make_static(PoseNet(arch, num_keypoints, joint_mask))


def build_static(arch: dict, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A static subnet rebuilt from its arch config and its own weights alone."""
    k = head_of(arch).keypoints_in(state_dict)
    net = new_static(arch, k, state_dict.get("tokens.joint_mask"))
    net.load_state_dict(state_dict)
    return net.eval()
