"""One search trial: an arch config from the space, its analytic MACs, its latency (a predictor's
estimate when one is given, then the cached or fresh measurement), and only when both budgets
hold, its inherited AP (evaluated once per supernet and data: ``nas.search.evaluations``); under a
target whose precision changes what the network computes (int8), the AP as the target runs it
(``nas.search.deployed``). Infeasible trials are recorded with AP 0 and positive constraint
values, so NSGA-II and TPE rank them below every feasible one.
"""
from __future__ import annotations

import json
import os
import socket
import time

import optuna

from nas.errors import PoseNASError
from nas.latency.meter import LatencyMeter
from nas.latency.predictor import LatencyPredictor
from nas.latency.settings import measured_for, target_of
from nas.pose.dataset import CocoPoseDataset, set_files
from nas.search.accuracy import evaluation_key
from nas.search.config import SearchConfig
from nas.search.deployed import deployed_metrics, measured_as_deployed
from nas.search.evaluations import Evaluations, scored
from nas.search.strategies import STRATEGIES
from nas.subnet.inherit import TrainedSupernet
from nas.subnet.precision import precision_of
from search_spaces import arch_hash
from supernet.cost import arch_cost

CLEARLY_OVER = 1.25  # a predicted latency this far over budget is not measured
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial (several workers share a study)


def search_supernet(cfg: SearchConfig) -> TrainedSupernet:
    """The supernet a search evaluates, its BN calibrated as the search says."""
    return TrainedSupernet.load(cfg.supernet, set_files(cfg.calib_data) if cfg.calib_data else None, cfg.calib_images)


class Objective:
    """One trial: arch config -> MACs -> latency -> (if feasible) inherited AP."""

    def __init__(self, cfg: SearchConfig, meter: LatencyMeter, supernet: TrainedSupernet | None = None):
        """``supernet``: ``search_supernet(cfg)`` already loaded (else loaded here)."""
        self.cfg, self.meter = cfg, meter
        self.supernet = supernet or search_supernet(cfg)
        self.space, self.k = self.supernet.space, self.supernet.num_keypoints
        self.predictor = LatencyPredictor.load(cfg.predictor) if cfg.predictor else None
        if self.predictor and measured_for(self.predictor.settings) != meter.settings.measures:
            raise PoseNASError(f"{cfg.predictor}: predicts {measured_for(self.predictor.settings)} latency, but the "
                               f"search measures {meter.settings.measures} latency; build or adapt one with the "
                               f"same --latency-of and --people")
        if self.predictor and target_of(self.predictor.settings) != meter.settings.target:
            raise PoseNASError(f"{cfg.predictor}: a latency model of target {target_of(self.predictor.settings)}, but "
                               f"the search measures {meter.settings.target}; build or adapt one for that target")
        self.dataset = CocoPoseDataset(cfg.val_ann, cfg.val_images, self.supernet.spec)
        self.objectives = STRATEGIES[cfg.sampler].objectives
        self.evaluation = evaluation_key(self.supernet, self.dataset, cfg.eval_images, cfg.flip_test)
        self.evaluations = Evaluations(self.evaluation)
        self.known: dict[str, float] = {}  # arch hash -> inherited AP known for this evaluation, not evaluated again
        settings = meter.settings  # a target's AP measured as deployed is kept apart from torch's
        self.deployed = Evaluations({**self.evaluation, "deployed": [settings.backend, settings.precision,
                                                                     precision_of(settings.precision).recipe]}) \
            if measured_as_deployed(settings, cfg.flip_test) else None

    def deployed_ap(self, arch: dict, attrs: dict) -> float:
        """The AP of ``arch`` as the target runs it (``nas.search.deployed``), measured once."""
        metrics = self.deployed.get(arch)
        if metrics is None:
            start = time.perf_counter()
            metrics = deployed_metrics(self.supernet, arch, self.dataset, self.meter.settings, self.cfg.eval_images)
            self.deployed.put(arch, metrics)
            attrs["deployed_evaluation_s"] = time.perf_counter() - start
        return scored(metrics["AP"])

    def predicted_latency(self, arch: dict) -> float:
        """The latency predictor's figure of ``arch`` for the budget's statistic."""
        return self.predictor.predict(arch, self.cfg.latency_figure)

    def check_budgets(self) -> dict:
        """Refuse budgets that even the space's smallest subnet misses, before any trial runs."""
        smallest = self.space.min()
        cost = arch_cost(smallest, self.k)
        if self.cfg.macs_budget is not None and cost.macs > self.cfg.macs_budget:
            raise PoseNASError(f"MACs budget {self.cfg.macs_budget:.4g} is below the smallest subnet of space "
                               f"{self.space.name!r} (min preset: {cost.macs:.4g} MACs); no subnet can meet it")
        latency = self.meter.measure(smallest, self.k)[self.cfg.latency_figure]
        if latency > self.cfg.latency_budget_ms:
            raise PoseNASError(f"latency budget {self.cfg.latency_budget_ms} ms is below the smallest subnet of space "
                               f"{self.space.name!r} (min preset: {latency:.2f} ms measured); no subnet can meet it")
        return {"min_macs": cost.macs, "min_latency_ms": latency}

    def __call__(self, trial: optuna.Trial):
        arch = self.space.suggest(trial)
        attrs = self.assess(arch)
        for name, over in self.cfg.over_budgets(attrs["macs"], attrs["latency_ms"]).items():
            trial.set_constraint(name, over)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        values = {"AP": attrs["AP"], "latency_ms": attrs["latency_ms"]}
        return tuple(values[name] for name in self.objectives)

    def assess(self, arch: dict, measure: bool = False) -> dict:
        """MACs, latency and (within both budgets) inherited AP of ``arch``; the latency is
        measured unless the latency predictor puts it clearly over budget (``measure``: always)."""
        cfg = self.cfg
        start = time.perf_counter()
        cost = arch_cost(arch, self.k)
        attrs: dict = {"arch": json.dumps(arch, separators=(",", ":")), "arch_hash": arch_hash(arch),
                       "macs": cost.macs, "params": cost.params, "evaluated": False, "worker": WORKER}
        predicted = self.predicted_latency(arch) if self.predictor else None
        attrs["latency_predicted_ms"] = predicted
        if not measure and predicted is not None and predicted > CLEARLY_OVER * cfg.latency_budget_ms:
            latency, attrs["latency_measured"] = predicted, False
        else:
            t = time.perf_counter()
            figures = self.meter.measure(arch, self.k)
            latency = figures[cfg.latency_figure]
            attrs.update(latency_measured=True, latency_median_ms=figures["median_ms"],
                         latency_p90_ms=figures["p90_ms"],
                         latency_spread=figures["spread"],
                         latency_cached=figures["cached"], latency_s=time.perf_counter() - t)
        attrs["latency_ms"] = latency
        ap = 0.0
        over = cfg.over_budgets(cost.macs, latency)
        attrs["macs_over"], attrs["feasible"] = over["macs"], max(over.values()) <= 0
        if attrs["feasible"]:
            known, timings = self.known.get(attrs["arch_hash"]), {}
            metrics = {"AP": known} if known is not None else self.evaluations.get(arch)
            if metrics is None:
                metrics = self.supernet.evaluate(arch, self.dataset, cfg.flip_test, cfg.eval_images, timings=timings)
                self.evaluations.put(arch, metrics)
            ap = scored(metrics["AP"])
            attrs.update({f"metric_{k}": v for k, v in metrics.items()}, evaluated=True, evaluation_cached=not timings,
                         **timings)
            if self.deployed is not None:  # the AP the search weighs is the target's; torch's is its fp32 twin's
                attrs["inherited_AP"], ap = ap, self.deployed_ap(arch, attrs)
        attrs["AP"] = ap
        attrs["trial_s"] = time.perf_counter() - start
        return attrs
