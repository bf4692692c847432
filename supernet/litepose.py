"""A static LitePose-like bottom-up network: mobile backbone, large kernels, fusion deconv head.

Outputs follow the engine's convention, coarse to fine: stride 4 with K heatmaps and K tag maps,
then (with ``high_res_output``) stride 2 with K heatmaps, as HigherHRNet supervises them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from supernet.blocks import ConvBNAct, FusionUp, MBConv


@dataclass(frozen=True)
class Stage:
    width: int
    depth: int
    kernel: int = 7
    expand: int = 4


@dataclass(frozen=True)
class LitePoseConfig:
    num_keypoints: int = 17
    stem: int = 16
    stages: tuple[Stage, ...] = field(default_factory=lambda: (
        Stage(24, 2, 7, 3), Stage(40, 3, 7, 3), Stage(64, 3, 7, 3), Stage(96, 2, 7, 3)))  # strides 4..32
    head: tuple[int, ...] = (64, 48, 32)  # deconv widths at strides 16, 8, 4
    high_res_width: int = 24
    high_res_output: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LitePoseConfig":
        d = dict(d)
        d["stages"] = tuple(Stage(**s) for s in d["stages"])
        d["head"] = tuple(d["head"])
        return cls(**d)


class LitePoseNet(nn.Module):
    def __init__(self, cfg: LitePoseConfig = LitePoseConfig()):
        super().__init__()
        self.cfg = cfg
        k = cfg.num_keypoints
        self.stem = nn.Sequential(ConvBNAct(3, cfg.stem, 3, 2), MBConv(cfg.stem, cfg.stem, 3, 1, 1))
        stages, cin = [], cfg.stem
        for st in cfg.stages:
            blocks = [MBConv(cin if i == 0 else st.width, st.width, st.kernel, 2 if i == 0 else 1, st.expand)
                      for i in range(st.depth)]
            stages.append(nn.Sequential(*blocks))
            cin = st.width
        self.stages = nn.ModuleList(stages)
        skips = [s.width for s in cfg.stages[:-1]][::-1]  # strides 16, 8, 4
        ups, cin = [], cfg.stages[-1].width
        for width, cskip in zip(cfg.head, skips):
            ups.append(FusionUp(cin, cskip, width))
            cin = width
        self.ups = nn.ModuleList(ups)
        self.final = nn.Conv2d(cin, 2 * k, 1)
        if cfg.high_res_output:
            self.up_high = FusionUp(cin, cfg.stem, cfg.high_res_width)
            self.final_high = nn.Conv2d(cfg.high_res_width, k, 1)
        for final in (self.final, getattr(self, "final_high", None)):
            if final is not None:  # start near-zero maps, as HigherHRNet initialises its final layers
                nn.init.normal_(final.weight, std=0.001)
                nn.init.zeros_(final.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.stem(x)
        feats, y = [], s2
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        y = feats[-1]
        for up, skip in zip(self.ups, feats[:-1][::-1]):
            y = up(y, skip)
        outputs = [self.final(y)]
        if self.cfg.high_res_output:
            outputs.append(self.final_high(self.up_high(y, s2)))
        return outputs
