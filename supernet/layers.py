"""Elastic building blocks: conv-BN-act, MBConv and HRNet's blocks, HRNet fusion, stage
transitions, fusion deconv.

Each block is built at some size (the supernet's largest, or exactly a subnet's) and told its
active size by ``set_active``; input channels always follow the input tensor. A stage is built
with every block type its space allows there (``types``) and runs the active one: MBConv stages
downsample with depthwise-separable steps, stages of HRNet blocks with dense 3x3 convolutions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.space import keeps_stride
from supernet.ops import DynamicBatchNorm2d, DynamicConv2d, DynamicConvTranspose2d


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, depthwise: bool = False,
                 act: bool = True):
        super().__init__()
        self.conv = DynamicConv2d(cin, cout, kernel, stride, depthwise)
        self.bn = DynamicBatchNorm2d(cin if depthwise else cout)
        self.act = act

    def set_active(self, cout: int | None = None, kernel: int | None = None, stride: int | None = None) -> None:
        if cout is not None:
            self.conv.active_out = cout
        if kernel is not None:
            self.conv.active_kernel = kernel
        if stride is not None:
            self.conv.active_stride = stride

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


class BasicBlock(nn.Module):
    """HRNet's basic block: two dense 3x3 convolutions and the identity."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1, self.conv2 = ConvBN(width, width, 3), ConvBN(width, width, 3, act=False)

    def set_active(self, width: int, block: dict) -> None:
        self.conv1.set_active(width)
        self.conv2.set_active(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class Bottleneck(nn.Module):
    """HRNet's first-stage bottleneck (ResNet's): 1x1 down to a quarter of the width, 3x3, 1x1 up,
    and the identity, or a 1x1 projection where the input is narrower (the first block)."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.reduce, self.conv = ConvBN(cin, width // 4, 1), ConvBN(width // 4, width // 4, 3)
        self.restore = ConvBN(width // 4, width, 1, act=False)
        self.shortcut = ConvBN(cin, width, 1, act=False) if cin != width else None

    def set_active(self, width: int, block: dict) -> None:
        for conv, cout in ((self.reduce, width // 4), (self.conv, width // 4), (self.restore, width),
                           (self.shortcut, width)):
            if conv is not None:
                conv.set_active(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(identity + self.restore(self.conv(self.reduce(x))))


BLOCK_LISTS = {"mbconv": "blocks", "basic": "basic", "bottleneck": "bottlenecks"}  # a branch's attribute per type


def _blocks(block_type: str, width: int, branch: dict, cin: int) -> nn.ModuleList:
    if block_type == "mbconv":
        return nn.ModuleList(MBConv(width, width, branch) for _ in range(branch["depth"]))
    if block_type == "basic":
        return nn.ModuleList(BasicBlock(width) for _ in range(branch["depth"]))
    return nn.ModuleList(Bottleneck(cin if d == 0 else 4 * cin, 4 * cin) for d in range(branch["depth"]))


class Branch(nn.Module):
    """The blocks of one branch in one fusion module (``branch``: its arch config dict, ``depth``
    blocks alike), one list per block type in ``types``; depth 0 passes the input on. Bottlenecks
    (HRNet's first stage) run at four times the stage's input width ``cin``, whatever ``width``."""

    def __init__(self, width: int, branch: dict, types: tuple[str, ...] = ("mbconv",), cin: int | None = None):
        super().__init__()
        for block_type in types:  # the attribute names keep checkpoints of MBConv-only supernets valid
            setattr(self, BLOCK_LISTS[block_type], _blocks(block_type, width, branch, cin or width))
        self.active_depth, self.active_type = branch["depth"], types[0]

    def set_active(self, width: int, branch: dict, block_type: str = "mbconv") -> None:
        self.active_depth, self.active_type = branch["depth"], block_type
        for block in getattr(self, BLOCK_LISTS[block_type])[:self.active_depth]:
            block.set_active(width, branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in getattr(self, BLOCK_LISTS[self.active_type])[:self.active_depth]:
            x = block(x)
        return x


def downsampling(types: tuple[str, ...]) -> tuple[bool, ...]:
    """Which downsampling a stage of these block types needs: separable (False), dense (True)."""
    return tuple(sorted({t != "mbconv" for t in types}))


class Resample(nn.Module):
    """HRNet's exchange from branch ``i`` to branch ``j``: 1x1 conv then nearest upsampling when
    ``i > j``; when ``i < j``, ``j - i`` stride-2 steps: depthwise-separable (Lite-HRNet style,
    ``steps``) in MBConv stages, dense 3x3 (HRNet's, ``dense_steps``) in stages of HRNet blocks."""

    def __init__(self, i: int, j: int, cin: int, cout: int, dense: tuple[bool, ...] = (False,)):
        """``dense``: the downsampling it may run, as ``downsampling`` gives it."""
        super().__init__()
        self.scale = 2 ** (i - j) if i > j else 1
        self.dense = dense[0]
        if i > j:
            self.steps = nn.ModuleList([ConvBN(cin, cout, 1, act=False)])
            return
        if False in dense:
            steps = []
            for t in range(j - i):
                last = t == j - i - 1
                steps += [ConvBN(cin, cin, 3, 2, depthwise=True, act=False),
                          ConvBN(cin, cout if last else cin, 1, act=not last)]
            self.steps = nn.ModuleList(steps)
        if True in dense:
            self.dense_steps = nn.ModuleList(ConvBN(cin, cout if t == j - i - 1 else cin, 3, 2, act=t < j - i - 1)
                                             for t in range(j - i))

    def _active_steps(self) -> nn.ModuleList:
        return self.dense_steps if self.dense and self.scale == 1 else self.steps

    def set_active(self, cin: int, cout: int, dense: bool = False) -> None:
        self.dense = dense
        steps = self._active_steps()
        for step in steps:
            if not step.conv.depthwise:
                step.set_active(cin)
        steps[-1].set_active(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self._active_steps():
            x = step(x)
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x


class FusionModule(nn.Module):
    """One HRNet module: every active branch runs its blocks, then the active branches exchange
    features (sum of resampled inputs, then ReLU). Branches at depth 0 sit out and pass through.
    ``into_first``: only the first branch receives (HRNet's last module, under its own head)."""

    def __init__(self, widths: list[int], branches: list[dict], types: tuple[str, ...] = ("mbconv",),
                 cin: int | None = None, into_first: bool = False):
        super().__init__()
        self.branches = nn.ModuleList(Branch(w, b, types, cin) for w, b in zip(widths, branches))
        active = [i for i, b in enumerate(branches) if b["depth"] > 0]
        self.fuse = nn.ModuleDict({f"{i}_{j}": Resample(i, j, widths[i], widths[j], downsampling(types))
                                   for j in _receivers(active, into_first) for i in active if i != j})
        self.active, self.receivers = active, _receivers(active, into_first)

    def set_active(self, widths: list[int], branches: list[dict], block_type: str = "mbconv",
                   into_first: bool = False) -> None:
        self.active = [i for i, b in enumerate(branches) if b["depth"] > 0]
        self.receivers = _receivers(self.active, into_first)
        for branch, w, b in zip(self.branches, widths, branches):
            branch.set_active(w, b, block_type)
        for j in self.receivers:
            for i in self.active:
                if i != j:
                    self.fuse[f"{i}_{j}"].set_active(widths[i], widths[j], block_type != "mbconv")

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        ys = list(xs)
        for i in self.active:
            ys[i] = self.branches[i](xs[i])
        if len(self.active) == 1:
            return ys
        out = list(ys)
        for j in self.receivers:
            total = ys[j]
            for i in self.active:
                if i != j:
                    total = total + self.fuse[f"{i}_{j}"](ys[i])
            out[j] = F.relu(total)
        return out


def _receivers(active: list[int], into_first: bool) -> list[int]:
    return [j for j in active if j == 0 or not into_first]


class Stage(nn.Module):
    """A transition that opens the stage's new, lower-resolution branch from the previous lowest
    one, followed by ``modules`` fusion modules. MBConv stages open with a depthwise 3x3 stride 2,
    then 1x1 (``transition``); stages of HRNet blocks with a dense 3x3 stride 2 (``dense_transition``;
    for bottlenecks at the input's width, which they widen fourfold). ``adapt``: the input width of
    the first branch where it may arrive at another width than the stage's (after bottlenecks): a
    dense 3x3 brings it there (HRNet's transition). ``types``: the block types the stage may run.
    ``into_first``: the last module fuses into the first branch only (HRNet's last stage, under
    its own head)."""

    def __init__(self, cin: int, widths: list[int], stage: dict, types: tuple[str, ...] = ("mbconv",),
                 adapt: int | None = None, into_first: bool = False):
        super().__init__()
        low, stride = widths[-1], 1 if keeps_stride(stage) else 2
        if "mbconv" in types:
            self.transition = nn.Sequential(ConvBN(cin, cin, 3, stride, depthwise=True), ConvBN(cin, low, 1))
        if set(types) - {"mbconv"}:
            self.dense_transition = ConvBN(cin, max(cin if t == "bottleneck" else low for t in types if t != "mbconv"),
                                           3, stride)
        if adapt is not None:
            self.adapter = ConvBN(adapt, widths[0], 3)
        last = stage["modules"] - 1
        self.fusion_modules = nn.ModuleList(FusionModule(widths, stage["branches"], types, cin, into_first and m == last)
                                            for m in range(stage["modules"]))
        self.active_modules, self.active_type, self.adapting = stage["modules"], types[0], False

    def set_active(self, widths: list[int], stage: dict, adapting: bool = False, into_first: bool = False) -> None:
        """``widths``: the branches' (a bottleneck stage's: four times its input's); ``adapting``:
        the first branch arrives at another width than ``widths[0]``."""
        self.active_type, self.adapting = stage["block"], adapting
        low = widths[-1] // 4 if stage["block"] == "bottleneck" else widths[-1]
        stride = 1 if keeps_stride(stage) else 2
        if stage["block"] == "mbconv":
            self.transition[0].set_active(stride=stride)
            self.transition[1].set_active(low)
        else:
            self.dense_transition.set_active(low, stride=stride)
        if adapting:
            self.adapter.set_active(widths[0])
        self.active_modules = stage["modules"]
        for m, module in enumerate(self.fusion_modules[:self.active_modules]):
            module.set_active(widths, stage["branches"], stage["block"], into_first and m == self.active_modules - 1)

    def forward(self, xs: list[torch.Tensor], low: torch.Tensor) -> list[torch.Tensor]:
        if self.adapting:
            xs = [self.adapter(xs[0]), *xs[1:]]
        xs = xs + [(self.transition if self.active_type == "mbconv" else self.dense_transition)(low)]
        for module in self.fusion_modules[:self.active_modules]:
            xs = module(xs)
        return xs


class HigherUp(nn.Module):
    """HigherHRNet's deconvolution module: the stride-4 maps and features (concatenated, maps
    first, so that their channels keep their weights whatever the features' width), a 4x4
    deconvolution to stride 2, batch norm, ReLU and four basic blocks."""

    BLOCKS = 4

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.deconv = DynamicConvTranspose2d(cin, width)
        self.bn = DynamicBatchNorm2d(width)
        self.blocks = nn.ModuleList(BasicBlock(width) for _ in range(self.BLOCKS))

    def set_active(self, head: dict) -> None:
        self.deconv.active_out = head["width"]
        for block in self.blocks:
            block.set_active(head["width"], head)

    def forward(self, maps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.deconv(torch.cat([maps, features], dim=1))))
        for block in self.blocks:
            y = block(y)
        return y


class FusionUp(nn.Module):
    """One step of LitePose's fusion deconv head: 2x deconvolution, add the projected skip
    features of that resolution, refine with a depthwise 5x5 and a 1x1. ``head`` is the arch
    config's head dict (its ``width`` is the step's output channels). ``scales``: where the
    input may already be at the skip's resolution (a last stage that did not downsample), a
    1x1 (``lateral``) stands in for the deconvolution."""

    def __init__(self, cin: int, cskip: int, head: dict, scales: tuple[int, ...] = (2,)):
        super().__init__()
        cout = head["width"]
        if 2 in scales:
            self.deconv = DynamicConvTranspose2d(cin, cout)
            self.bn = DynamicBatchNorm2d(cout)
        if 1 in scales:
            self.lateral = ConvBN(cin, cout, 1)
        self.skip = ConvBN(cskip, cout, 1, act=False)
        self.refine = nn.Sequential(ConvBN(cout, cout, 5, depthwise=True), ConvBN(cout, cout, 1))
        self.scale = scales[0]

    def set_active(self, head: dict, scale: int = 2) -> None:
        self.scale = scale
        if scale == 2:
            self.deconv.active_out = head["width"]
        else:
            self.lateral.set_active(head["width"])
        self.skip.set_active(head["width"])
        self.refine[1].set_active(head["width"])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.relu(self.bn(self.deconv(x))) if self.scale == 2 else self.lateral(x)
        return self.refine(up + self.skip(skip))
