"""The Optuna search: inherited AP against measured latency, under MACs and latency budgets.

Each trial is one arch config suggested through the space. Cheap checks come first: the analytic
MACs, then the latency (a predictor's estimate when one is given, then the cached or fresh
measurement); only a feasible subnet is extracted, BN-recalibrated and evaluated. Infeasible trials
are recorded with AP 0 and positive constraint values, so NSGA-II and TPE rank them below every
feasible one. The study lives in an Optuna storage (SQLite in the run folder by default; any RDB
URL lets several workers share it) and ``--trials`` counts completed trials of the whole study, so
the same command resumes an interrupted search and several workers stop together.
"""
from __future__ import annotations

import json
import os
import random
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from nas.subnet.calibration import CalibrationSet
from nas.pose.dataset import CocoPoseDataset
from nas.errors import PoseNASError
from nas.io import remove_stale_temp_files, write_json, write_text
from nas.latency.meter import LatencyMeter
from nas.latency.predictor import LatencyPredictor
from nas.subnet.inherit import supernet_data, evaluate_subnet, load_supernet
from search_spaces import arch_hash
from supernet.cost import arch_cost

SAMPLERS = ("nsga2", "tpe", "random")
CLEARLY_OVER = 1.25  # a predicted latency this far over budget is not measured
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial (several workers share a study)


@dataclass
class SearchConfig:
    supernet: str
    val_ann: str
    val_images: str
    latency_budget_ms: float
    out: str
    macs_budget: float | None = None
    trials: int = 40
    sampler: str = "nsga2"
    storage: str | None = None  # default: sqlite:///OUT/study.db
    study: str = "posenas"
    eval_images: int | None = 100
    calib_data: str | None = None  # BN calibration images (default: the supernet's training set)
    calib_images: int = 64
    flip_test: bool = False
    predictor: str | None = None
    seed: int | None = None
    population: int = 10  # NSGA-II generation size: its first generation is random, so keep it well below trials

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise PoseNASError(f"sampler {self.sampler!r} unknown; use one of {list(SAMPLERS)}")
        if self.latency_budget_ms <= 0 or (self.macs_budget is not None and self.macs_budget <= 0):
            raise PoseNASError("budgets must be positive")
        if self.trials < 1:
            raise PoseNASError("--trials must be at least 1")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"


def parse_macs(text: str | float | None) -> float | None:
    """'800M', '1.2G', '2e9' or a number of MACs."""
    if text is None or isinstance(text, (int, float)):
        return text
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:].upper())
    try:
        return float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        raise PoseNASError(f"--macs-budget {text!r}: give a number of MACs such as 800M or 1.2G") from None


def make_sampler(name: str, seed: int | None, population: int) -> optuna.samplers.BaseSampler:
    """NSGA-II and TPE read each trial's constraints (``Trial.set_constraint``) themselves."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(cfg: SearchConfig) -> optuna.Study:
    """Create or load the study; heartbeats let a killed worker's trial be failed and retried."""
    directions = ["maximize"] if cfg.sampler == "tpe" else ["maximize", "minimize"]
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(cfg.storage_url, heartbeat_interval=5, grace_period=20,
                                     heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
            break
        except sqlalchemy.exc.DBAPIError:  # workers starting together race to create the schema
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random())
    sampler = make_sampler(cfg.sampler, cfg.seed, cfg.population)
    study = optuna.create_study(study_name=cfg.study, storage=storage, sampler=sampler,
                                directions=directions, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise PoseNASError(f"study {cfg.study!r} in {cfg.storage_url} was created with other objectives "
                           f"({[d.name.lower() for d in study.directions]}); use another --study")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["AP", "latency_ms"][:len(directions)])  # labels for optuna-dashboard
    return study


class Objective:
    """One trial: arch config -> MACs -> latency -> (if feasible) inherited AP."""

    def __init__(self, cfg: SearchConfig, meter: LatencyMeter):
        self.cfg, self.meter = cfg, meter
        self.supernet, self.space, ckpt = load_supernet(cfg.supernet)
        self.k = ckpt["num_keypoints"]
        self.predictor = LatencyPredictor.load(cfg.predictor) if cfg.predictor else None
        self.spec = ckpt["spec"]
        self._supernet_data = supernet_data(ckpt, cfg.calib_data)
        self.calibration: CalibrationSet | None = None
        self.dataset = CocoPoseDataset(cfg.val_ann, cfg.val_images, self.spec)

    def check_budgets(self) -> dict:
        """Refuse budgets that even the space's smallest subnet misses, before any trial runs."""
        smallest = self.space.min()
        cost = arch_cost(smallest, self.k)
        if self.cfg.macs_budget is not None and cost.macs > self.cfg.macs_budget:
            raise PoseNASError(f"MACs budget {self.cfg.macs_budget:.4g} is below the smallest subnet of space "
                               f"{self.space.name!r} (min preset: {cost.macs:.4g} MACs); no subnet can meet it")
        latency = self.meter.measure(smallest, self.k)["median_ms"]
        if latency > self.cfg.latency_budget_ms:
            raise PoseNASError(f"latency budget {self.cfg.latency_budget_ms} ms is below the smallest subnet of space "
                               f"{self.space.name!r} (min preset: {latency:.2f} ms measured); no subnet can meet it")
        return {"min_macs": cost.macs, "min_latency_ms": latency}

    def __call__(self, trial: optuna.Trial):
        cfg = self.cfg
        start = time.perf_counter()
        arch = self.space.suggest(trial)
        cost = arch_cost(arch, self.k)
        attrs: dict = {"arch": json.dumps(arch, separators=(",", ":")), "arch_hash": arch_hash(arch),
                       "macs": cost.macs, "params": cost.params, "evaluated": False, "worker": WORKER}
        macs_ok = cfg.macs_budget is None or cost.macs <= cfg.macs_budget
        predicted = self.predictor.predict(arch) if self.predictor else None
        attrs["latency_predicted_ms"] = predicted
        if predicted is not None and predicted > CLEARLY_OVER * cfg.latency_budget_ms:
            latency, attrs["latency_measured"] = predicted, False
        else:
            t = time.perf_counter()
            figures = self.meter.measure(arch, self.k)
            latency = figures["median_ms"]
            attrs.update(latency_measured=True, latency_p90_ms=figures["p90_ms"], latency_spread=figures["spread"],
                         latency_cached=figures["cached"], latency_s=time.perf_counter() - t)
        attrs["latency_ms"] = latency
        trial.set_constraint("macs", cost.macs - cfg.macs_budget if cfg.macs_budget else -1.0)
        trial.set_constraint("latency_ms", latency - cfg.latency_budget_ms)
        ap = 0.0
        if macs_ok and latency <= cfg.latency_budget_ms:
            if self.calibration is None:
                self.calibration = CalibrationSet(CocoPoseDataset(*self._supernet_data, self.spec),
                                                  cfg.calib_images)
            timings: dict = {}
            metrics = evaluate_subnet(self.supernet, arch, self.calibration, self.dataset, cfg.flip_test,
                                      cfg.eval_images, timings=timings)
            ap = metrics["AP"] if metrics["AP"] == metrics["AP"] else 0.0  # NaN: nobody to find
            attrs.update({f"metric_{k}": v for k, v in metrics.items()}, evaluated=True, **timings)
        attrs["trial_s"] = time.perf_counter() - start
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return ap if cfg.sampler == "tpe" else (ap, latency)


def trial_table(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: number, state, AP, latency, feasibility, every user attribute."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {"number": t.number, "state": t.state.name, "AP": t.values[0],
               "duration_s": t.duration.total_seconds() if t.duration else None}
        row.update(t.user_attrs)
        row["feasible"] = bool(t.constraints) and all(c <= 0 for c in t.constraints.values())
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """Feasible, evaluated trials that no other such trial beats on both AP and latency."""
    ok = table[table["feasible"] & table["evaluated"]].sort_values(["latency_ms", "AP"], ascending=[True, False])
    keep, best = [], -1.0
    for index, row in ok.iterrows():
        if row["AP"] > best:
            keep.append(index)
            best = row["AP"]
    return ok.loc[keep]


def hypervolume(front: pd.DataFrame, latency_ref: float) -> float:
    """Area dominated by the front in (AP up, latency down) with reference point (AP 0, budget)."""
    points = front.sort_values("latency_ms")[["latency_ms", "AP"]].to_numpy()
    area = 0.0
    for i, (latency, ap) in enumerate(points):
        right = points[i + 1][0] if i + 1 < len(points) else latency_ref
        area += max(0.0, min(right, latency_ref) - latency) * ap
    return area


def write_outputs(study: optuna.Study, cfg: SearchConfig) -> dict:
    out = Path(cfg.out)
    table = trial_table(study)
    if table.empty:
        return {"trials": 0}
    write_text(out / "trials.csv", table.to_csv(index=False))
    front = pareto_front(table)
    pareto = [{"number": int(r["number"]), "AP": r["AP"], "latency_ms": r["latency_ms"], "macs": int(r["macs"]),
               "params": int(r["params"]), "arch_hash": r["arch_hash"], "arch": json.loads(r["arch"])}
              for _, r in front.iterrows()]
    write_json(out / "pareto.json", {"study": cfg.study, "storage": cfg.storage_url,
                                     "latency_budget_ms": cfg.latency_budget_ms, "macs_budget": cfg.macs_budget,
                                     "pareto": pareto}, indent=1)
    return {"trials": len(table), "feasible": int(table["feasible"].sum()), "pareto": len(pareto),
            "best_ap": max((p["AP"] for p in pareto), default=None),
            "hypervolume": hypervolume(front, cfg.latency_budget_ms)}


def run_search(cfg: SearchConfig, meter: LatencyMeter, progress: bool = True) -> dict:
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(cfg.out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = Objective(cfg, meter)
    floor = objective.check_budgets()
    study = open_study(cfg)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done:
        print(f"resuming study {cfg.study!r}: {done} of {cfg.trials} trials complete")
    if done < cfg.trials:
        study.optimize(objective, n_trials=cfg.trials - done, show_progress_bar=progress,
                       callbacks=[MaxTrialsCallback(cfg.trials, states=(TrialState.COMPLETE,))])
    summary = {**write_outputs(study, cfg), **floor}
    write_json(Path(cfg.out) / "search.json", summary, indent=1)
    return summary
