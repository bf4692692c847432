"""Finetune searched winners: start from the inherited weights, train further with the supernet's
largest subnet as teacher (none at ``distill_weight`` 0: about half the time), and record the AP
before and after.

Each winner gets its own folder: ``before.json`` (inherited AP, BN recalibrated), the training run
(checkpoint, log, curves; resumable), ``finetune.json`` (before and after) and ``export/``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from nas.config import AT_LEAST_ONE
from nas.errors import PoseNASError
from nas.io import read_json, write_json, writer_lock
from nas.latency.meter import LatencyMeter
from nas.latency.settings import DEFAULT
from nas.pose.dataset import CocoPoseDataset
from nas.pose.evaluate import evaluate_network, metrics_json
from nas.subnet.export import export_subnet, load_model
from nas.subnet.inherit import TrainedSupernet
from nas.subnet.precision import precision_of
from nas.train.static import CHECKPOINT, TrainConfig, train
from search_spaces import arch_hash

RECORD = "finetune.json"
EXPORT = "export"


@dataclass
class FinetuneConfig(TrainConfig):
    epochs: float = 2
    lr: float = 1e-3
    warmup_epochs: float = 0.2
    calibration_images: int = 64

    RANGES = {**TrainConfig.RANGES, "calibration_images": AT_LEAST_ONE}


def finetune_subnet(supernet_path: str | Path, arch: dict, cfg: FinetuneConfig, out: str | Path,
                    meter: LatencyMeter | None = None, progress: bool = True) -> dict:
    """Finetune one subnet into ``out`` (resuming what is there; its only writer) and export it to
    ``out/export``."""
    with writer_lock(out):
        return _finetune(supernet_path, arch, cfg, Path(out), meter, progress)


def _finetune(supernet_path: str | Path, arch: dict, cfg: FinetuneConfig, out: Path, meter: LatencyMeter | None,
              progress: bool) -> dict:
    if cfg.val_ann is None:
        raise PoseNASError("finetuning needs held-out data to evaluate before and after: give --val-data")
    # BN calibrated on the supernet's own training set, as the search and the card calibrate it:
    # "before" is the inherited AP they report, whatever data the finetuning then trains on
    supernet = TrainedSupernet.load(supernet_path, calibration_images=cfg.calibration_images, seed=cfg.seed)
    arch = supernet.space.validate(arch, "finetune arch")
    student = supernet.inherit(arch)
    val_ds = CocoPoseDataset(cfg.val_ann, cfg.val_images, cfg.spec)  # scored before, and an int8 export's check
    before_path = out / "before.json"
    if before_path.exists():
        before = read_json(before_path)
    else:
        before = metrics_json(evaluate_network(student, val_ds, arch["resolution"], cfg.flip_test,
                                               progress=progress)[0])
        write_json(before_path, before, indent=1)
    teacher = supernet.inherit(supernet.space.max(), resolution=arch["resolution"]) if cfg.distill_weight else None
    after = metrics_json(train(replace(cfg, arch=arch, space=supernet.space_source), out, progress,
                               init=student.state_dict(), teacher=teacher))
    record = {"arch_hash": arch_hash(arch), "arch": arch, "epochs": cfg.epochs, "before": before, "after": after,
              "supernet": str(supernet_path)}
    write_json(out / RECORD, record, indent=1)
    net, ckpt = load_model(out / CHECKPOINT)
    latency = meter.card_entry(arch, supernet.num_keypoints) if meter is not None else None
    card = export_subnet(net, arch, out / EXPORT, supernet.spec, after, latency,
                         source={"supernet": str(supernet_path), "finetune_epochs": cfg.epochs, "inherited": before,
                                 "synthetic": supernet.synthetic or bool(ckpt.get("synthetic"))},
                         precision=precision_of((meter.settings if meter is not None else DEFAULT).precision),
                         calibration=supernet.calibration, check=val_ds)
    return {**record, "export": str(out / EXPORT), "card": card}
