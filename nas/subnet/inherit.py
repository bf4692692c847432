"""Subnets with inherited weights: a trained supernet, the images that recalibrate its subnets'
batch norm, and the one way a subnet leaves it (extract, then recalibrate).

Inherited BN statistics belong to whatever mix of subnets the supernet last ran; OFA and BigNAS
re-estimate them per subnet before using it. The calibration images are read on first use.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from torch import nn

from nas.io import read_checkpoint, sha256
from nas.pose.dataset import CocoPoseDataset
from nas.pose.evaluate import evaluate_network
from nas.subnet import zoo
from nas.subnet.calibration import CalibrationSet, recalibrate
from search_spaces import SearchSpace
from supernet.network import PoseNet, extract

CALIBRATION_IMAGES = 64  # training images that recalibrate a subnet's BN, by default


class TrainedSupernet:
    """A supernet and its space; ``calibration`` is the dataset (or its (annotations, images)
    files) whose ``calibration_images`` images, picked by ``seed``, recalibrate every subnet
    (None: the supernet's own training set, read on first use)."""

    def __init__(self, net: PoseNet, space: SearchSpace, spec: str,
                 calibration: CocoPoseDataset | tuple[str, str] | None,
                 calibration_images: int = CALIBRATION_IMAGES, seed: int = 0, record: dict | None = None):
        self.net, self.space, self.spec, self.record = net, space, spec, record or {}
        self._calibration_source, self._images, self._seed = calibration, calibration_images, seed
        self._calibration: CalibrationSet | None = None
        self._identity: str | None = None

    @classmethod
    def load(cls, path: str | Path, calibration: tuple[str, str] | None = None,
             calibration_images: int = CALIBRATION_IMAGES, seed: int = 0,
             device: torch.device | str = "cpu") -> "TrainedSupernet":
        """The supernet of a ``train-supernet`` checkpoint (weights-only loading: nothing is
        unpickled) or of a zoo entry (``zoo:NAME`` or its folder), calibrated by default on its
        own training set (a zoo entry's regenerated from its recipe)."""
        if zoo.is_entry(path):
            folder = zoo.locate(path)
            record = zoo.read_card(folder)
            state = zoo.load_weights(folder, record, device)
        else:
            record = read_checkpoint(path, ("supernet", "space", "num_keypoints"), "supernet checkpoint", device)
            state = record["supernet"]
        return cls.from_state(record, state, calibration, calibration_images, seed, device, str(path))

    @staticmethod
    def space_of(path: str | Path) -> SearchSpace:
        """The search space of a supernet checkpoint or zoo entry, its network left unbuilt."""
        if zoo.is_entry(path):
            return SearchSpace(zoo.read_card(zoo.locate(path))["space"], f"{path} (space)")
        record = read_checkpoint(path, ("supernet", "space", "num_keypoints"), "supernet checkpoint")
        return SearchSpace(record["space"], f"{path} (space)")

    @classmethod
    def from_state(cls, record: dict, state: dict[str, torch.Tensor], calibration=None,
                   calibration_images: int = CALIBRATION_IMAGES, seed: int = 0,
                   device: torch.device | str = "cpu", source: str = "supernet") -> "TrainedSupernet":
        """The supernet that ``record`` (a checkpoint or zoo card: space, keypoints, spec) describes,
        with the weights ``state``."""
        space = SearchSpace(record["space"], f"{source} (space)")
        net = PoseNet.supernet(space, record["num_keypoints"], state.get("tokens.joint_mask")).to(device)
        net.load_state_dict(state)
        return cls(net.eval(), space, record["spec"], calibration, calibration_images, seed, record)

    @property
    def train_files(self) -> tuple[str, str]:
        """(annotations, images) the supernet was trained on (a zoo entry's regenerated)."""
        return train_files(self.record)

    @property
    def identity(self) -> str:
        """SHA-256 of the weights as loaded (a zoo entry's card holds it): what evaluations of
        its subnets are keyed by, so that they are reused only for the same weights."""
        if self._identity is None:
            self._identity = self.record["sha256"] if zoo.is_card(self.record) else parameter_digest(self.net)
        return self._identity

    @property
    def calibration_key(self) -> dict:
        """What BN is recalibrated on, beside the weights: the annotations' digest where they are not
        the supernet's own training set (None), the image count and the seed that picks them."""
        source = self._calibration_source
        ann = source.ann_file if isinstance(source, CocoPoseDataset) else source[0] if source else None
        return {"data": sha256(ann) if ann else None, "images": self._images, "seed": self._seed}

    @property
    def synthetic(self) -> bool:
        """Whether it was trained on synthetic data (a zoo card's data kind, a checkpoint's flag)."""
        return self.record["data"]["kind"] == "synthetic" if zoo.is_card(self.record) else \
            bool(self.record.get("synthetic"))

    @property
    def space_source(self) -> str:
        """The space name or YAML path it was trained on (what a static trainer reads)."""
        return self.record["space_name"] if zoo.is_card(self.record) else self.record["config"]["space"]

    @property
    def num_keypoints(self) -> int:
        return self.net.num_keypoints

    @property
    def calibration(self) -> CalibrationSet:
        if self._calibration is None:
            source = self._calibration_source or calibration_files(self.record, self._images)
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


def calibration_files(record: dict, images: int) -> tuple[str, str]:
    """A checkpoint's training set, or the ``images`` images a zoo entry regenerates for calibration."""
    return zoo.regenerated(record, images) if zoo.is_card(record) else train_files(record)


def train_files(record: dict) -> tuple[str, str]:
    """(annotations, images) of a supernet checkpoint's or zoo card's training set."""
    if zoo.is_card(record):
        return zoo.training_files(record)
    return record["config"]["train_ann"], record["config"]["train_images"]


def parameter_digest(net: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: equal digests mean identical weights."""
    h = hashlib.sha256()
    for p in net.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
