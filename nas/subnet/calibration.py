"""Batch-norm recalibration: a subnet's BN statistics re-estimated on fixed training images.

Inherited BN statistics belong to whatever mix of subnets the supernet last ran; OFA and BigNAS
re-estimate them per subnet before evaluating it. The images are read once and the letterboxed
tensors cached per resolution, so evaluating many subnets costs forward passes only.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nas.pose.dataset import CocoPoseDataset
from nas.pose.inference import prepare


class CalibrationSet:
    """``images`` training images picked by ``seed``, as input batches at any resolution."""

    def __init__(self, dataset: CocoPoseDataset, images: int = 64, batch_size: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        ids = dataset.image_ids
        chosen = rng.choice(len(ids), size=min(images, len(ids)), replace=False)
        self.images = [dataset.load_image(ids[i]) for i in sorted(chosen)]
        self.batch_size = batch_size
        self._batches: dict[int, list[torch.Tensor]] = {}

    def inputs(self, resolution: int) -> list[np.ndarray]:
        """Each image as a (1, 3, R, R) network input: what a quantizer calibrates on."""
        return [batch[i:i + 1].numpy() for batch in self.batches(resolution) for i in range(len(batch))]

    def batches(self, resolution: int) -> list[torch.Tensor]:
        if resolution not in self._batches:
            inputs = torch.from_numpy(np.stack([prepare(image, resolution)[0] for image in self.images]))
            self._batches[resolution] = list(inputs.split(self.batch_size))
        return self._batches[resolution]


@torch.no_grad()
def recalibrate(net: nn.Module, batches: list[torch.Tensor], device: torch.device | str = "cpu") -> nn.Module:
    """Reset every BN layer's running statistics and re-estimate them as exact averages over
    ``batches`` (momentum None); leaves the network in eval mode."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    for batch in batches:
        net(batch.to(device))
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    return net.eval()
