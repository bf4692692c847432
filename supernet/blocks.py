"""Static building blocks shared by the baseline and by subnets extracted from the supernet."""
from __future__ import annotations

import torch
from torch import nn


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2) with a large depthwise kernel, as LitePose uses."""

    def __init__(self, cin: int, cout: int, kernel: int = 7, stride: int = 1, expand: int = 4):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class FusionUp(nn.Module):
    """One step of LitePose's fusion deconv head: 2x deconvolution, add the projected skip, refine."""

    def __init__(self, cin: int, cskip: int, cout: int, kernel: int = 5):
        super().__init__()
        self.deconv = nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                                    nn.ReLU(inplace=True))
        self.skip = ConvBNAct(cskip, cout, 1, act=False)
        self.refine = nn.Sequential(ConvBNAct(cout, cout, kernel, groups=cout), ConvBNAct(cout, cout, 1))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.refine(self.deconv(x) + self.skip(skip))
