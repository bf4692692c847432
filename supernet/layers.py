"""Elastic building blocks: conv-BN-act, MBConv, HRNet fusion, stage transitions, fusion deconv.

Each block is built at some size (the supernet's largest, or exactly a subnet's) and told its
active size by ``set_active``; input channels always follow the input tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from supernet.ops import DynamicBatchNorm2d, DynamicConv2d, DynamicConvTranspose2d


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, depthwise: bool = False,
                 act: bool = True):
        super().__init__()
        self.conv = DynamicConv2d(cin, cout, kernel, stride, depthwise)
        self.bn = DynamicBatchNorm2d(cin if depthwise else cout)
        self.act = act

    def set_active(self, cout: int | None = None, kernel: int | None = None) -> None:
        if cout is not None:
            self.conv.active_out = cout
        if kernel is not None:
            self.conv.active_kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return F.relu(y) if self.act else y


class MBConv(nn.Module):
    """Inverted residual with a large depthwise kernel (LitePose's block): elastic kernel (centre
    crop), expand ratio (hidden = input channels x ratio) and output width. ``block`` is the arch
    config's dict for it (``kernel``, ``expand``): the block reads what it needs."""

    def __init__(self, cin: int, cout: int, block: dict, stride: int = 1):
        super().__init__()
        mid = cin * block["expand"]
        self.expand = ConvBN(cin, mid, 1) if block["expand"] > 1 else None  # a fixed ratio of 1 needs no 1x1
        self.depthwise = ConvBN(mid, mid, block["kernel"], stride, depthwise=True)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.stride = stride
        self.active_expand = block["expand"]
        self.active_out = cout

    def set_active(self, cout: int, block: dict) -> None:
        self.active_out, self.active_expand = cout, block["expand"]
        self.depthwise.set_active(kernel=block["kernel"])
        self.project.set_active(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand is not None:
            self.expand.set_active(x.shape[1] * self.active_expand)
            x_mid = self.expand(x)
        else:
            x_mid = x
        y = self.project(self.depthwise(x_mid))
        return x + y if self.stride == 1 and x.shape[1] == self.active_out else y


class Branch(nn.Module):
    """The blocks of one branch in one fusion module (``branch``: its arch config dict, ``depth``
    blocks alike); depth 0 passes the input on."""

    def __init__(self, width: int, branch: dict):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(width, width, branch) for _ in range(branch["depth"]))
        self.active_depth = branch["depth"]

    def set_active(self, width: int, branch: dict) -> None:
        self.active_depth = branch["depth"]
        for block in self.blocks[:self.active_depth]:
            block.set_active(width, branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks[:self.active_depth]:
            x = block(x)
        return x


class Resample(nn.Module):
    """HRNet's exchange from branch ``i`` to branch ``j``: 1x1 conv then nearest upsampling when
    ``i > j``; when ``i < j``, ``j - i`` depthwise-separable stride-2 steps (Lite-HRNet style)."""

    def __init__(self, i: int, j: int, cin: int, cout: int):
        super().__init__()
        self.scale = 2 ** (i - j) if i > j else 1
        if i > j:
            self.steps = nn.ModuleList([ConvBN(cin, cout, 1, act=False)])
        else:
            steps = []
            for t in range(j - i):
                last = t == j - i - 1
                steps += [ConvBN(cin, cin, 3, 2, depthwise=True, act=False),
                          ConvBN(cin, cout if last else cin, 1, act=not last)]
            self.steps = nn.ModuleList(steps)

    def set_active(self, cin: int, cout: int) -> None:
        for step in self.steps:
            if not step.conv.depthwise:
                step.set_active(cin)
        self.steps[-1].set_active(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x


class FusionModule(nn.Module):
    """One HRNet module: every active branch runs its blocks, then the active branches exchange
    features (sum of resampled inputs, then ReLU). Branches at depth 0 sit out and pass through."""

    def __init__(self, widths: list[int], branches: list[dict]):
        super().__init__()
        self.branches = nn.ModuleList(Branch(w, b) for w, b in zip(widths, branches))
        active = [i for i, b in enumerate(branches) if b["depth"] > 0]
        self.fuse = nn.ModuleDict({f"{i}_{j}": Resample(i, j, widths[i], widths[j])
                                   for j in active for i in active if i != j})
        self.active = active

    def set_active(self, widths: list[int], branches: list[dict]) -> None:
        self.active = [i for i, b in enumerate(branches) if b["depth"] > 0]
        for branch, w, b in zip(self.branches, widths, branches):
            branch.set_active(w, b)
        for j in self.active:
            for i in self.active:
                if i != j:
                    self.fuse[f"{i}_{j}"].set_active(widths[i], widths[j])

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        ys = list(xs)
        for i in self.active:
            ys[i] = self.branches[i](xs[i])
        if len(self.active) == 1:
            return ys
        out = list(ys)
        for j in self.active:
            total = ys[j]
            for i in self.active:
                if i != j:
                    total = total + self.fuse[f"{i}_{j}"](ys[i])
            out[j] = F.relu(total)
        return out


class Stage(nn.Module):
    """A transition that opens the stage's new, lower-resolution branch from the previous lowest
    one (depthwise 3x3 stride 2, then 1x1), followed by ``modules`` fusion modules."""

    def __init__(self, cin: int, widths: list[int], stage: dict):
        super().__init__()
        self.transition = nn.Sequential(ConvBN(cin, cin, 3, 2, depthwise=True), ConvBN(cin, widths[-1], 1))
        self.fusion_modules = nn.ModuleList(FusionModule(widths, stage["branches"]) for _ in range(stage["modules"]))
        self.active_modules = stage["modules"]

    def set_active(self, widths: list[int], stage: dict) -> None:
        self.transition[1].set_active(widths[-1])
        self.active_modules = stage["modules"]
        for module in self.fusion_modules[:self.active_modules]:
            module.set_active(widths, stage["branches"])

    def forward(self, xs: list[torch.Tensor], low: torch.Tensor) -> list[torch.Tensor]:
        xs = xs + [self.transition(low)]
        for module in self.fusion_modules[:self.active_modules]:
            xs = module(xs)
        return xs


class FusionUp(nn.Module):
    """One step of LitePose's fusion deconv head: 2x deconvolution, add the projected skip
    features of that resolution, refine with a depthwise 5x5 and a 1x1. ``head`` is the arch
    config's head dict (its ``width`` is the step's output channels)."""

    def __init__(self, cin: int, cskip: int, head: dict):
        super().__init__()
        cout = head["width"]
        self.deconv = DynamicConvTranspose2d(cin, cout)
        self.bn = DynamicBatchNorm2d(cout)
        self.skip = ConvBN(cskip, cout, 1, act=False)
        self.refine = nn.Sequential(ConvBN(cout, cout, 5, depthwise=True), ConvBN(cout, cout, 1))

    def set_active(self, head: dict) -> None:
        self.deconv.active_out = head["width"]
        self.skip.set_active(head["width"])
        self.refine[1].set_active(head["width"])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.refine(F.relu(self.bn(self.deconv(x))) + self.skip(skip))
