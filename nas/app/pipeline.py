"""The whole NAS pipeline in one command and one run folder, resumable at each stage.

Stages: data (synthetic sets) -> supernet training -> baselines (presets with inherited weights)
-> search under the budgets -> finetune and export the winners -> Pareto plot and summary table.
A finished stage is recorded in ``stages.json`` and skipped when the command runs again; a stage
cut short resumes from its own checkpoints (supernet, Optuna study, finetuning runs).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from nas.subnet.calibration import CalibrationSet
from nas.pose.dataset import CocoPoseDataset
from nas.errors import PoseNASError
from nas.train.finetune import FinetuneConfig, finetune_subnet, pareto_winners
from nas.io import read_json, read_yaml, write_json, write_text
from nas.latency.meter import RuntimeSettings, make_meter
from nas.app.report import BASELINES, FINETUNE_DIR, finetuned, plot_run
from nas.search.study import SearchConfig, parse_macs, run_search
from nas.train.settings import typed
from nas.subnet.inherit import evaluate_subnet, load_supernet
from nas.train.supernet import CHECKPOINT, SupernetConfig, train_supernet
from nas.pose.synth import generate
from search_spaces import arch_hash
from supernet.cost import arch_cost

DEFAULT_CONFIG = "nas.yaml"
SECTIONS = {"name", "space", "data", "supernet", "latency", "search", "finetune", "baselines"}
DATA_KEYS = {"train_images", "val_images", "size", "train_seed", "val_seed"}
STAGES = ("data", "supernet", "baselines", "search", "finetune", "report")


def load_run_config(path: str | None) -> dict:
    with resources.as_file(resources.files("nas.app.configs") / DEFAULT_CONFIG) as default:
        cfg = read_yaml(path or default, "run config")
    source = path or DEFAULT_CONFIG
    unknown = sorted(set(cfg) - SECTIONS)
    if unknown:
        raise PoseNASError(f"{source}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    for section in SECTIONS - {"name", "space", "baselines"}:
        if not isinstance(cfg.get(section, {}), dict):
            raise PoseNASError(f"{source}: section {section!r} must be a mapping")
    unknown = sorted(set(cfg.get("data", {})) - DATA_KEYS)
    if unknown:
        raise PoseNASError(f"{source}: unknown data setting(s) {unknown}; known: {sorted(DATA_KEYS)}")
    return cfg


class Pipeline:
    """One run folder; every stage reads what the one before it wrote."""

    def __init__(self, config: str | None = None, out: str | None = None):
        cfg = load_run_config(config)
        self.source = config or DEFAULT_CONFIG
        self.run = Path(out or Path("results") / cfg.get("name", "nas"))
        self.data = cfg.get("data", {})
        data = {"train_ann": str(self.run / "data/train/annotations.json"),
                "train_images": str(self.run / "data/train/images"),
                "val_ann": str(self.run / "data/val/annotations.json"), "val_images": str(self.run / "data/val/images")}
        space = cfg.get("space", "cpu")
        # every section is checked before any work is done
        self.supernet_cfg = SupernetConfig.from_dict({**cfg.get("supernet", {}), **data, "space": space},
                                                     f"{self.source} (supernet)")
        self.runtime = typed(RuntimeSettings, cfg.get("latency", {}), f"{self.source} (latency)")
        search = dict(cfg.get("search", {}))
        if "latency_budget_ms" not in search:
            raise PoseNASError(f"{self.source}: search.latency_budget_ms is required")
        search["macs_budget"] = parse_macs(search.get("macs_budget"))
        self.search_cfg = typed(SearchConfig, {**search, "supernet": str(self.supernet_path), "val_ann": data["val_ann"],
                                               "val_images": data["val_images"], "out": str(self.run / "search")},
                                f"{self.source} (search)")
        finetune = dict(cfg.get("finetune", {}))
        self.top = finetune.pop("top", 2)
        self.finetune_cfg = FinetuneConfig.from_dict({**finetune, **data, "space": space},
                                                     f"{self.source} (finetune)")
        self.baselines = cfg.get("baselines", ["min", "max", "higherhrnet_w32", "litepose_xs", "litepose_s"])
        self.stages_path = self.run / "stages.json"

    @property
    def supernet_path(self) -> Path:
        return self.run / "supernet" / CHECKPOINT

    def meter(self):
        return make_meter(self.runtime, cache=self.run / "latency-cache.sqlite")

    def done(self) -> list[str]:
        return read_json(self.stages_path) if self.stages_path.exists() else []

    def run_all(self) -> dict:
        done = self.done()
        for i, stage in enumerate(STAGES):
            if stage in done:
                print(f"[{i + 1}/{len(STAGES)}] {stage}: done earlier")
                continue
            print(f"[{i + 1}/{len(STAGES)}] {stage}")
            getattr(self, f"stage_{stage}")()
            done.append(stage)
            write_json(self.stages_path, done)
        return self.summary()

    def stage_data(self) -> None:
        size = tuple(self.data.get("size", (256, 256)))
        for name, images, seed in (("train", self.data.get("train_images", 1000), self.data.get("train_seed", 1)),
                                   ("val", self.data.get("val_images", 100), self.data.get("val_seed", 2))):
            folder = self.run / "data" / name
            if not (folder / "annotations.json").exists():  # written last and atomically: present means whole
                generate(folder, images, seed, size)

    def stage_supernet(self) -> None:
        train_supernet(self.supernet_cfg, self.supernet_path.parent)

    def stage_baselines(self) -> None:
        """The presets with inherited weights, on the search's evaluation images: labelled baselines."""
        supernet, space, ckpt = load_supernet(self.supernet_path)
        meter, k = self.meter(), ckpt["num_keypoints"]
        calibration = CalibrationSet(CocoPoseDataset(self.supernet_cfg.train_ann, self.supernet_cfg.train_images),
                                     self.search_cfg.calib_images)
        val = CocoPoseDataset(self.search_cfg.val_ann, self.search_cfg.val_images)
        rows = []
        for name in tqdm(self.baselines, desc="baselines"):
            arch = space.canonical(space.resolve(name))
            metrics = evaluate_subnet(supernet, arch, calibration, val, self.search_cfg.flip_test,
                                      self.search_cfg.eval_images)
            cost = arch_cost(arch, k)
            rows.append({"preset": name, "AP": metrics["AP"], "latency_ms": meter.measure(arch, k)["median_ms"],
                         "macs": cost.macs, "params": cost.params, "arch_hash": arch_hash(arch)})
        write_text(self.run / BASELINES, pd.DataFrame(rows).to_csv(index=False))

    def stage_search(self) -> None:
        run_search(self.search_cfg, self.meter())

    def stage_finetune(self) -> None:
        winners = pareto_winners(self.run / "search" / "pareto.json", self.top)
        meter = self.meter()
        for i, arch in enumerate(winners):
            print(f"winner {i + 1}/{len(winners)} ({arch_hash(arch)})")
            finetune_subnet(self.supernet_path, arch, self.finetune_cfg,
                            self.run / FINETUNE_DIR / f"{i + 1}-{arch_hash(arch)}", meter)

    def stage_report(self) -> None:
        plot_run(self.run)
        table = self.table()
        write_text(self.run / "summary.csv", table.to_csv(index=False))
        cells = table.astype(object).where(table.notna(), None)  # empty cells, not "nan"
        write_text(self.run / "summary.md", cells.to_markdown(index=False, floatfmt=".4g", missingval="") + "\n")

    def table(self) -> pd.DataFrame:
        """Presets, the Pareto set and the finetuned winners: AP, latency, MACs side by side."""
        rows = []
        if (self.run / BASELINES).exists():
            for _, r in pd.read_csv(self.run / BASELINES).iterrows():
                rows.append({"kind": "preset", "name": r["preset"], "AP_inherited": r["AP"],
                             "latency_ms": r["latency_ms"], "GMACs": r["macs"] / 1e9})
        for p in read_json(self.run / "search" / "pareto.json")["pareto"]:
            rows.append({"kind": "pareto", "name": f"trial {p['number']}", "AP_inherited": p["AP"],
                         "latency_ms": p["latency_ms"], "GMACs": p["macs"] / 1e9})
        for _, w in finetuned(self.run).iterrows():
            rows.append({"kind": "winner", "name": w["winner"], "AP_inherited": w["AP_inherited"],
                         "AP_finetuned": w["AP_finetuned"], "latency_ms": w["latency_ms"], "GMACs": w["macs"] / 1e9,
                         "export": w["export"]})
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        exports = sorted(str(p.parent) for p in (self.run / FINETUNE_DIR).glob("*/export/card.json"))
        return {"run": str(self.run), "pareto_plot": str(self.run / "pareto.png"), "summary": str(self.run / "summary.md"),
                "exports": exports}


def run_pipeline(config: str | None = None, out: str | None = None) -> dict:
    summary = Pipeline(config, out).run_all()
    print(f"Pareto plot: {summary['pareto_plot']}\nsummary: {summary['summary']}")
    for path in summary["exports"]:
        print(f"exported winner: {path}")
    return summary
