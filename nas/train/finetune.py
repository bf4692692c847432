"""Finetune searched winners: start from the inherited weights, train further with the supernet's
largest subnet as teacher, and record the AP before and after.

Each winner gets its own folder: ``before.json`` (inherited AP, BN recalibrated), the training run
(checkpoint, log, curves; resumable), ``finetune.json`` (before and after) and ``export/``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from nas.subnet.calibration import CalibrationSet, recalibrate
from nas.errors import PoseNASError
from nas.pose.evaluate import metrics_json
from nas.subnet.export import export_subnet
from nas.io import read_json, remove_stale_temp_files, write_json
from nas.latency.meter import LatencyMeter
from nas.subnet.inherit import load_supernet
from nas.train.static import CHECKPOINT, TrainConfig, evaluate_network, load_model, train
from search_spaces import arch_hash
from supernet.network import extract

RECORD = "finetune.json"


@dataclass
class FinetuneConfig(TrainConfig):
    epochs: int = 2
    lr: float = 1e-3
    warmup_epochs: float = 0.2
    calibration_images: int = 64


def pareto_winners(path: str | Path, top: int) -> list[dict]:
    """The ``top`` arch configs of a search's pareto.json, best AP first."""
    pareto = read_json(path, "Pareto file")
    if not isinstance(pareto, dict) or not isinstance(pareto.get("pareto"), list):
        raise PoseNASError(f"{path}: not a pareto.json of posenas search (needs a 'pareto' list)")
    if not pareto["pareto"]:
        raise PoseNASError(f"{path}: the Pareto set is empty (no feasible trial was evaluated)")
    if top < 1:
        raise PoseNASError(f"--top must be at least 1, got {top}")
    ranked = sorted(pareto["pareto"], key=lambda p: p["AP"], reverse=True)
    return [p["arch"] for p in ranked[:top]]


def finetune_subnet(supernet_path: str | Path, arch: dict, cfg: FinetuneConfig, out: str | Path,
                    meter: LatencyMeter | None = None, progress: bool = True) -> dict:
    """Finetune one subnet into ``out`` (resuming what is there) and export it to ``out/export``."""
    out = Path(out)
    remove_stale_temp_files(out / "export")
    supernet, space, ckpt = load_supernet(supernet_path)
    arch = space.validate(arch, "finetune arch")
    if cfg.val_ann is None:
        raise PoseNASError("finetuning needs held-out data to evaluate before and after: give --val-data")
    train_ds, val_ds = cfg.datasets()
    resolution = arch["resolution"]
    calibration = CalibrationSet(train_ds, cfg.calibration_images, seed=cfg.seed)
    student = recalibrate(extract(supernet, arch), calibration.batches(resolution))
    before_path = out / "before.json"
    if before_path.exists():
        before = read_json(before_path)
    else:
        before = metrics_json(evaluate_network(student, val_ds, resolution, cfg.flip_test, progress=progress)[0])
        write_json(before_path, before, indent=1)
    teacher = recalibrate(extract(supernet, space.max()), calibration.batches(resolution))
    after = metrics_json(train(replace(cfg, arch=arch, space=ckpt["config"]["space"]), out, progress,
                               init=student.state_dict(), teacher=teacher))
    record = {"arch_hash": arch_hash(arch), "arch": arch, "epochs": cfg.epochs, "before": before, "after": after,
              "supernet": str(supernet_path)}
    write_json(out / RECORD, record, indent=1)
    net, _ = load_model(out / CHECKPOINT)
    card = export_subnet(net, arch, out / "export", ckpt["spec"], after, meter,
                         source={"supernet": str(supernet_path), "finetune_epochs": cfg.epochs, "inherited": before})
    return {**record, "export": str(out / "export"), "card": card}

