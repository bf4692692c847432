"""Subnets with inherited weights: a trained supernet, the images that recalibrate its subnets'
batch norm, and the one way a subnet leaves it (extract, then recalibrate).

Inherited BN statistics belong to whatever mix of subnets the supernet last ran; OFA and BigNAS
re-estimate them per subnet before using it. The calibration images are read on first use.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from nas.io import read_checkpoint
from nas.pose.dataset import CocoPoseDataset
from nas.pose.evaluate import evaluate_network
from nas.subnet.calibration import CalibrationSet, recalibrate
from search_spaces import SearchSpace
from supernet.network import PoseNet, extract


class TrainedSupernet:
    """A supernet and its space; ``calibration`` is the dataset (or its (annotations, images)
    files) whose ``calibration_images`` images, picked by ``seed``, recalibrate every subnet."""

    def __init__(self, net: PoseNet, space: SearchSpace, spec: str,
                 calibration: CocoPoseDataset | tuple[str, str], calibration_images: int = 64, seed: int = 0,
                 record: dict | None = None):
        self.net, self.space, self.spec, self.record = net, space, spec, record or {}
        self._calibration_source, self._images, self._seed = calibration, calibration_images, seed
        self._calibration: CalibrationSet | None = None

    @classmethod
    def load(cls, path: str | Path, calibration: tuple[str, str] | None = None, calibration_images: int = 64,
             seed: int = 0, device: torch.device | str = "cpu") -> "TrainedSupernet":
        """The supernet of a ``train-supernet`` checkpoint (weights-only loading: nothing is
        unpickled), calibrated by default on its own training set."""
        ckpt = read_checkpoint(path, ("supernet", "space", "num_keypoints"), "supernet checkpoint", device)
        space = SearchSpace(ckpt["space"], f"{path} (space)")
        state = ckpt["supernet"]
        net = PoseNet(space.max(), ckpt["num_keypoints"], state.get("tokens.joint_mask")).to(device)
        net.load_state_dict(state)
        return cls(net.eval(), space, ckpt["spec"], calibration or train_files(ckpt), calibration_images, seed, ckpt)

    @property
    def train_files(self) -> tuple[str, str]:
        """(annotations, images) the supernet was trained on, as its checkpoint records them."""
        return train_files(self.record)

    @property
    def num_keypoints(self) -> int:
        return self.net.num_keypoints

    @property
    def calibration(self) -> CalibrationSet:
        if self._calibration is None:
            source = self._calibration_source
            dataset = source if isinstance(source, CocoPoseDataset) else CocoPoseDataset(*source, self.spec)
            self._calibration = CalibrationSet(dataset, self._images, seed=self._seed)
        return self._calibration

    def inherit(self, arch: dict, resolution: int | None = None, device: torch.device | str = "cpu") -> nn.Module:
        """The static subnet ``arch`` with the supernet's weights, its BN statistics re-estimated at
        ``resolution`` (default: the subnet's own); in eval mode."""
        net = extract(self.net, arch).to(device)
        return recalibrate(net, self.calibration.batches(resolution or arch["resolution"]), device)

    def evaluate(self, arch: dict, dataset: CocoPoseDataset, flip_test: bool = False, limit: int | None = None,
                 device: torch.device | str = "cpu", timings: dict | None = None) -> dict[str, float]:
        """COCO metrics of the inherited subnet ``arch``; ``timings`` (when given) receives the
        seconds spent recalibrating and evaluating."""
        start = time.perf_counter()
        net = self.inherit(arch, device=device)
        middle = time.perf_counter()
        metrics, _ = evaluate_network(net, dataset, arch["resolution"], flip_test, limit, device=device)
        if timings is not None:
            timings.update(calibration_s=middle - start, evaluation_s=time.perf_counter() - middle)
        return metrics


def train_files(record: dict) -> tuple[str, str]:
    """(annotations, images) of a supernet checkpoint's training set."""
    return record["config"]["train_ann"], record["config"]["train_images"]
