"""The whole NAS pipeline in one command and one run folder, resumable at each stage.

Stages: data (synthetic sets, or the user's COCO-format sets checked) -> supernet training ->
baselines (presets with inherited weights) -> latency model -> search under the budgets (one per
target where the config names several, then one front over them) -> finetune and export the winners
(each for its target) -> Pareto plot and summary table. ``supernet: zoo:NAME`` (or a supernet.pt)
instead of a training section searches a supernet trained once (train once, search many); the
latency stage then adapts the shipped latency model to this machine for a search on predicted AP. A
finished stage is recorded in ``stages.json`` and skipped when the command runs again; a stage cut
short resumes from its own checkpoints (supernet, Optuna study, finetuning runs).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml
from tqdm import tqdm

from nas.app.report import plot_run, write_summary
from nas.app.runs import RunLayout
from nas.config import is_kind
from nas.errors import PoseNASError
from nas.io import read_json, read_yaml, write_json, write_text, writer_lock
from nas.latency.adaptation import adapted_reference, described
from nas.latency.meter import make_meter
from nas.latency.runtimes import runtime_of
from nas.latency.settings import RuntimeSettings
from nas.pose.dataset import CocoPoseDataset, set_files
from nas.pose.synth import synthetic_set
from nas.search.config import SearchConfig
from nas.search.deployed import target_metrics
from nas.search.objective import search_supernet
from nas.search.results import pareto_winners
from nas.search.study import run_search
from nas.search.targets import merge_searches, target_folder
from nas.subnet.export import CARD
from nas.subnet.inherit import TrainedSupernet
from nas.train.finetune import EXPORT, FinetuneConfig, finetune_subnet
from nas.train.supernet import SupernetConfig, train_supernet
from search_spaces import arch_hash
from supernet.cost import arch_cost

DEFAULT_CONFIG = "nas.yaml"
SECTIONS = {"name", "space", "data", "supernet", "latency", "search", "finetune", "baselines"}
SYNTHETIC_KEYS = {"train_images", "val_images", "size", "train_seed", "val_seed"}
COCO_KEYS = {"train", "val", "spec"}  # train/val: {ann: GT.json, images: DIR}; spec: detected when left out
DATA_KEYS = SYNTHETIC_KEYS | COCO_KEYS
STAGES = ("data", "supernet", "baselines", "latency", "search", "finetune", "report")


def load_run_config(path: str | None) -> dict:
    """A run config from ``path``, or shipped with the package under that name (``coco.yaml``,
    ``crowdpose.yaml``; none: the embedded default), every section checked."""
    shipped = resources.files("nas.app.configs") / (path or DEFAULT_CONFIG)
    with resources.as_file(shipped) as packaged:
        cfg = read_yaml(path if path and (Path(path).exists() or not packaged.is_file()) else packaged, "run config")
    source = path or DEFAULT_CONFIG
    unknown = sorted(set(cfg) - SECTIONS)
    if unknown:
        raise PoseNASError(f"{source}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    for section in SECTIONS - {"name", "space", "baselines"}:
        if not isinstance(cfg.get(section, {}), dict) and not (section == "supernet" and isinstance(cfg[section], str)):
            raise PoseNASError(f"{source}: section {section!r} must be a mapping"
                               + (" (or zoo:NAME or a supernet.pt to search)" if section == "supernet" else ""))
    unknown = sorted(set(cfg.get("data", {})) - DATA_KEYS)
    if unknown:
        raise PoseNASError(f"{source}: unknown data setting(s) {unknown}; known: {sorted(DATA_KEYS)}")
    check_data_section(cfg.get("data", {}), source)
    return cfg


def data_files(run: RunLayout, data: dict | None = None) -> dict:
    """train_ann, train_images, val_ann, val_images and spec of the run: the user's COCO-format
    sets (``data: {train: {ann, images}, val: {ann, images}}``), or the run's synthetic ones."""
    data = data or {}
    if "train" in data:
        return {f"{split}_{key}": str(data[split][key]) for split in ("train", "val") for key in ("ann", "images")} \
            | {"spec": data.get("spec")}
    (train_ann, train_images), (val_ann, val_images) = (set_files(run.data(s)) for s in ("train", "val"))
    return {"train_ann": train_ann, "train_images": train_images, "val_ann": val_ann, "val_images": val_images,
            "spec": None}


def check_data_section(data: dict, source: str) -> None:
    """One kind of data: synthetic settings, or COCO-format train and val sets, each an ann file
    and an image folder."""
    coco, synthetic = set(data) & COCO_KEYS, set(data) & SYNTHETIC_KEYS
    if coco and synthetic:
        raise PoseNASError(f"{source}: data is either synthetic ({sorted(synthetic)}) or COCO-format "
                           f"(train, val, spec), not both")
    if coco:
        for split in ("train", "val"):
            entry = data.get(split)
            if not isinstance(entry, dict) or set(entry) != {"ann", "images"} or \
                    not all(isinstance(v, str) for v in entry.values()):
                raise PoseNASError(f"{source}: data.{split} must be {{ann: GT.json, images: FOLDER}}, got {entry!r}")


def check_user_data(run: RunLayout, data: dict) -> None:
    """The user's COCO-format sets, read and checked whole before any stage: annotations (every
    field COCOeval relies on), one keypoint spec for both, every image named present (synthetic
    sets are made, not checked)."""
    if "train" not in data:
        return
    files = data_files(run, data)
    train, val = (CocoPoseDataset(files[f"{s}_ann"], files[f"{s}_images"], files["spec"]) for s in ("train", "val"))
    if train.spec.name != val.spec.name:
        raise PoseNASError(f"{files['val_ann']}: {val.spec.name} keypoints, but the training set "
                           f"{files['train_ann']} has {train.spec.name}; give sets of one spec")
    for ds in (train, val):
        if not ds.image_dir.is_dir():
            raise PoseNASError(f"{ds.image_dir}: image folder not found (for {ds.ann_file})")
        ds.check_images()


def make_data(run: RunLayout, data: dict) -> None:
    """The run's synthetic training and validation sets, generated unless they are there; the
    user's COCO-format sets are used where they are."""
    if "train" in data:
        return
    size = tuple(data.get("size", (256, 256)))
    for name, images, seed in (("train", data.get("train_images", 1000), data.get("train_seed", 1)),
                               ("val", data.get("val_images", 100), data.get("val_seed", 2))):
        synthetic_set(run.data(name), images, seed, size)


def supernet_config(cfg: dict, run: RunLayout, source: str) -> SupernetConfig | None:
    """The run config's supernet section, checked, on the run's data (None: a trained one is given)."""
    if isinstance(cfg.get("supernet"), str):
        return None
    section = {k: v for k, v in cfg.get("supernet", {}).items() if k != "processes"}
    return SupernetConfig.from_dict({**section, **data_files(run, cfg.get("data")), "space": cfg.get("space", "cpu")},
                                    f"{source} (supernet)")


def supernet_processes(cfg: dict, source: str) -> int:
    """``supernet.processes``: train the supernet as that many processes under torchrun (one per GPU)."""
    processes = cfg.get("supernet", {}).get("processes", 1) if isinstance(cfg.get("supernet"), dict) else 1
    if not is_kind(processes, int) or not 1 <= processes <= 1024:
        raise PoseNASError(f"{source} (supernet): processes must be an integer from 1 to 1024, got {processes!r}")
    return processes


def train_supernet_as(cfg: SupernetConfig, out: Path, processes: int) -> None:
    """The supernet stage in this process, or as ``processes`` processes under torchrun: the same
    settings written beside the folder and handed to ``posenas train-supernet``."""
    if processes == 1:
        train_supernet(cfg, out)
        return
    settings = write_text(out.parent / "supernet.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               str(Path(sys.executable).with_name("posenas")), "train-supernet", "--config", str(settings),
               "--out", str(out)]
    threads = max(1, int(os.environ.get("OMP_NUM_THREADS", processes)) // processes)  # the free cores, shared
    if subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)}).returncode:
        raise PoseNASError(f"{out}: the supernet's training under torchrun ({processes} processes) failed; its "
                           f"output above says why, and the same command resumes it")


class Pipeline:
    """One run folder; every stage reads what the one before it wrote."""

    def __init__(self, config: str | None = None, out: str | None = None):
        cfg = load_run_config(config)
        self.source = config or DEFAULT_CONFIG
        self.run = RunLayout(Path(out or Path("results") / cfg.get("name", "nas")))
        self.data = cfg.get("data", {})
        data = data_files(self.run, self.data)
        val_ann, val_images = data["val_ann"], data["val_images"]
        space = cfg.get("space", "cpu")
        # every section is checked before any work is done
        self.supernet_cfg = supernet_config(cfg, self.run, self.source)
        self.processes = supernet_processes(cfg, self.source)
        self.supernet = cfg["supernet"] if self.supernet_cfg is None else str(self.run.supernet)
        self.runtimes = RuntimeSettings.each_of(cfg.get("latency", {}), f"{self.source} (latency)")
        self.runtime = self.runtimes[0]  # the baselines are measured on the first target
        for runtime in self.runtimes:
            runtime_of(runtime)
        search = cfg.get("search", {})
        if "latency_budget_ms" not in search:
            raise PoseNASError(f"{self.source}: search.latency_budget_ms is required")
        several = len(self.runtimes) > 1
        if several and (search.get("predictor") or search.get("storage")):
            raise PoseNASError(f"{self.source}: with several latency targets each searches on its own latency model "
                               f"and study; leave out search.predictor and search.storage")
        self.search_cfgs = {}  # target -> its search (one target: in search/, several: each in search/TARGET/)
        self.adapted = {}  # target -> the latency model the latency stage adapts for its search on predictions
        for runtime in self.runtimes:
            target = runtime.target if several else None
            if search.get("accuracy_predictor") and not search.get("predictor"):
                self.adapted[runtime.target] = self.run.latency_predictor(target)
            adapted = {"predictor": str(self.adapted[runtime.target])} if runtime.target in self.adapted else {}
            self.search_cfgs[runtime.target] = SearchConfig.from_dict(
                {**search, **adapted, "supernet": self.supernet, "val_ann": val_ann, "val_images": val_images,
                 "out": str(target_folder(self.run.search, target) if several else self.run.search)},
                f"{self.source} (search)")
        self.search_cfg = self.search_cfgs[self.runtime.target]
        finetune = dict(cfg.get("finetune", {}))
        self.top = finetune.pop("top", 2)
        self.finetune_cfg = FinetuneConfig.from_dict({**finetune, **data, "space": space},
                                                     f"{self.source} (finetune)")
        self.baselines = cfg.get("baselines", ["min", "max", "higherhrnet_w32", "litepose_xs", "litepose_s"])
        self._searched: TrainedSupernet | None = None  # loaded by the first stage that needs it

    def meter(self, runtime: RuntimeSettings | None = None):
        return make_meter(runtime or self.runtime, cache=self.run.latency_cache)

    def done(self) -> list[str]:
        return read_json(self.run.stages) if self.run.stages.exists() else []

    def run_all(self) -> dict:
        """Every stage not done yet, in order; one pipeline writes a run folder at a time."""
        with writer_lock(self.run.root):
            check_user_data(self.run, self.data)
            done = self.done()
            for i, stage in enumerate(STAGES):
                if stage in done:
                    print(f"[{i + 1}/{len(STAGES)}] {stage}: done earlier")
                    continue
                print(f"[{i + 1}/{len(STAGES)}] {stage}")
                started = time.perf_counter()
                getattr(self, f"stage_{stage}")()
                print(f"[{i + 1}/{len(STAGES)}] {stage}: {time.perf_counter() - started:.0f} s")
                done.append(stage)
                write_json(self.run.stages, done)
            return self.summary()

    def stage_data(self) -> None:
        make_data(self.run, self.data)

    def stage_supernet(self) -> None:
        if self.supernet_cfg is None:
            print(f"searching {self.supernet}: trained once, nothing to train")
            return
        train_supernet_as(self.supernet_cfg, self.run.supernet.parent, self.processes)

    def stage_latency(self) -> None:
        """For a search on predictions: the shipped latency model, adapted to this machine and each
        target by measuring a few anchor subnets."""
        for runtime in self.runtimes:
            if runtime.target not in self.adapted:
                continue
            adapted = adapted_reference(self.meter(runtime), TrainedSupernet.space_of(self.supernet))
            adapted.save(self.adapted[runtime.target])
            print(f"latency model adapted to this machine ({runtime.target}) {described(adapted)}")

    def stage_baselines(self) -> None:
        """The presets with inherited weights, on the search's evaluation images, as the target runs
        them: labelled baselines."""
        supernet = self.searched()
        meter, k, space = self.meter(), supernet.num_keypoints, supernet.space
        val = CocoPoseDataset(self.search_cfg.val_ann, self.search_cfg.val_images, supernet.spec)
        rows = []
        for name in tqdm(self.baselines, desc="baselines"):
            arch = space.resolve(name)
            metrics = target_metrics(supernet, arch, val, meter.settings, self.search_cfg.flip_test,
                                     self.search_cfg.eval_images)
            cost = arch_cost(arch, k)
            rows.append({"preset": name, "AP": metrics["AP"], "latency_ms": meter.measure(arch, k)["median_ms"],
                         "macs": cost.macs, "params": cost.params, "arch_hash": arch_hash(arch)})
        write_text(self.run.baselines, pd.DataFrame(rows).to_csv(index=False))

    def stage_search(self) -> None:
        """One search per target; with several, one front over them, each point on its own target."""
        for runtime in self.runtimes:
            run_search(self.search_cfgs[runtime.target], self.meter(runtime), supernet=self.searched())
        if len(self.runtimes) > 1:
            merged = merge_searches(list(self.search_cfgs), self.run.search)
            picked = ", ".join(f"{n} point(s) on {t}" for t, n in merged["picked"].items())
            print(f"one front over the targets: {picked}")

    def searched(self) -> TrainedSupernet:
        """The supernet as the search calibrates it, loaded once for the baselines and the search."""
        if self._searched is None:
            self._searched = search_supernet(self.search_cfg)
        return self._searched

    def stage_finetune(self) -> None:
        winners = pareto_winners(self.run.pareto, self.top)
        runtimes = {runtime.target: runtime for runtime in self.runtimes}
        for i, point in enumerate(winners):
            arch, runtime = point["arch"], runtimes[point.get("target", self.runtime.target)]
            print(f"winner {i + 1}/{len(winners)} ({arch_hash(arch)}, {runtime.target})")
            finetune_subnet(self.supernet, arch, self.finetune_cfg, self.run.winner(i + 1, arch_hash(arch)),
                            self.meter(runtime))

    def stage_report(self) -> None:
        plot_run(self.run.root)
        write_summary(self.run)

    def summary(self) -> dict:
        exports = [str(w / EXPORT) for w in self.run.winners() if (w / EXPORT / CARD).exists()]
        return {"run": str(self.run.root), "pareto_plot": str(self.run.pareto_plot),
                "summary": str(self.run.summary("md")), "exports": exports}


def run_pipeline(config: str | None = None, out: str | None = None) -> dict:
    summary = Pipeline(config, out).run_all()
    print(f"Pareto plot: {summary['pareto_plot']}\nsummary: {summary['summary']}")
    for path in summary["exports"]:
        print(f"exported winner: {path}")
    return summary
