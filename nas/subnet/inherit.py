"""A subnet's accuracy with inherited weights: extract, recalibrate BN, evaluate with COCO AP."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from nas.subnet.calibration import CalibrationSet, recalibrate
from nas.pose.dataset import CocoPoseDataset
from nas.io import read_checkpoint
from nas.train.static import evaluate_network
from search_spaces import SearchSpace
from supernet.network import PoseNet, extract


def evaluate_subnet(supernet: PoseNet, arch: dict, calibration: CalibrationSet, dataset: CocoPoseDataset,
                    flip_test: bool = False, limit: int | None = None, device: torch.device | str = "cpu",
                    timings: dict | None = None) -> dict[str, float]:
    """COCO metrics of ``arch`` with the supernet's weights, its BN statistics re-estimated;
    ``timings`` (when given) receives the seconds spent recalibrating and evaluating."""
    start = time.perf_counter()
    net = extract(supernet, arch).to(device)
    recalibrate(net, calibration.batches(arch["resolution"]), device)
    middle = time.perf_counter()
    metrics, _ = evaluate_network(net, dataset, arch["resolution"], flip_test, limit, device=device)
    if timings is not None:
        timings.update(calibration_s=middle - start, evaluation_s=time.perf_counter() - middle)
    return metrics


def load_supernet(path: str | Path, device: torch.device | str = "cpu") -> tuple[PoseNet, SearchSpace, dict]:
    """The supernet of a ``train-supernet`` checkpoint, its search space and the checkpoint record
    (weights-only loading: nothing is unpickled)."""
    ckpt = read_checkpoint(path, ("supernet", "space", "num_keypoints"), "supernet checkpoint", device)
    space = SearchSpace(ckpt["space"], f"{path} (space)")
    state = ckpt["supernet"]
    net = PoseNet(space.max(), ckpt["num_keypoints"], state.get("tokens.joint_mask")).to(device)
    net.load_state_dict(state)
    return net.eval(), space, ckpt


def supernet_data(ckpt: dict, folder: str | Path | None = None) -> tuple[str, str]:
    """(annotations, images) of a set folder (annotations.json + images/), by default the
    supernet's own training set recorded in its checkpoint: BN calibration and finetuning data."""
    if folder:
        return str(Path(folder) / "annotations.json"), str(Path(folder) / "images")
    return ckpt["config"]["train_ann"], ckpt["config"]["train_images"]
