"""OFA's channel sorting before width shrinking, for the channels that can move freely.

In every MBConv the hidden (expanded) channels are reordered by importance, the L1 norm of the
projection weights that read them, so that a smaller expand ratio keeps the most important ones.
The reordering permutes the expansion's outputs, its BN, the depthwise conv and the projection's
inputs together: the network computes exactly the same function. Branch widths are tied across
blocks by residual additions and fusions, so they keep their order.
"""
from __future__ import annotations

import torch
from torch import nn

from supernet.layers import MBConv


@torch.no_grad()
def sort_hidden_channels(net: nn.Module) -> int:
    """Sort every MBConv's hidden channels by importance; returns how many blocks changed order."""
    changed = 0
    for block in net.modules():
        if not isinstance(block, MBConv) or block.expand is None:
            continue
        order = block.project.conv.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        if torch.equal(order, torch.arange(len(order), device=order.device)):
            continue
        for layer in (block.expand, block.depthwise):
            layer.conv.weight.copy_(layer.conv.weight[order])
            for name in ("weight", "bias", "running_mean", "running_var"):
                tensor = getattr(layer.bn, name)
                tensor.copy_(tensor[order])
        block.project.conv.weight.copy_(block.project.conv.weight[:, order])
        changed += 1
    return changed
