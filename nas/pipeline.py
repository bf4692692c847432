"""The main job: synthesize data, train the baseline, evaluate it; each stage resumes where it stopped."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from nas.errors import PoseNASError
from nas.evaluate import format_metrics, metrics_json
from nas.io import read_yaml, write_json
from nas.synth import generate
from nas.train import TrainConfig, train

DEFAULT_CONFIG = "baseline.yaml"


def load_run_config(path: str | None) -> dict:
    with resources.as_file(resources.files("nas.configs") / DEFAULT_CONFIG) as default:
        cfg = read_yaml(path or default, "run config")
    if not isinstance(cfg.get("data"), dict) or not isinstance(cfg.get("train"), dict):
        raise PoseNASError(f"{path or DEFAULT_CONFIG}: a run config needs mappings 'data' and 'train'")
    return cfg


def _synth_once(out: Path, images: int, seed: int, size: tuple[int, int]) -> None:
    if not (out / "annotations.json").exists():  # written last and atomically: present means whole
        generate(out, images, seed, size)


DATA_KEYS = {"train_images", "val_images", "size", "train_seed", "val_seed"}


def run_baseline(config: str | None = None, out: str | None = None) -> dict:
    cfg = load_run_config(config)
    source = config or DEFAULT_CONFIG
    run = Path(out or Path("results") / cfg.get("name", "baseline"))
    data = cfg["data"]
    unknown = sorted(set(data) - DATA_KEYS)
    if unknown:
        raise PoseNASError(f"{source}: unknown data setting(s) {unknown}; known: {sorted(DATA_KEYS)}")
    train_dir, val_dir = run / "data" / "train", run / "data" / "val"
    settings = {**cfg["train"], "train_ann": str(train_dir / "annotations.json"), "train_images": str(train_dir / "images"),
                "val_ann": str(val_dir / "annotations.json"), "val_images": str(val_dir / "images")}
    train_cfg = TrainConfig.from_dict(settings, source)  # validated before any work is done
    size = tuple(data.get("size", (256, 256)))
    print(f"[1/3] data -> {run / 'data'}")
    _synth_once(train_dir, data.get("train_images", 1000), data.get("train_seed", 1), size)
    _synth_once(val_dir, data.get("val_images", 100), data.get("val_seed", 2), size)
    print(f"[2/3] train -> {run / 'train'}")
    metrics = train(train_cfg, run / "train")
    print("[3/3] results")
    if metrics:
        write_json(run / "metrics.json", metrics_json(metrics), indent=2)
        print(format_metrics(metrics))
    print(f"run folder: {run}\ncurves: {run / 'train' / 'curves.png'}\ncheckpoint: {run / 'train' / 'checkpoint.pt'}")
    return metrics
