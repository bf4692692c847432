"""The Optuna search job: a study in a storage, filled with trials until it holds ``trials``.

The study lives in an Optuna storage (SQLite in the run folder by default; any RDB URL lets
several workers share it) and ``trials`` counts completed trials of the whole study, so the same
command resumes an interrupted search and several workers stop together. Heartbeats let a
killed worker's trial be failed and retried.
"""
from __future__ import annotations

import random
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from nas.errors import PoseNASError
from nas.io import remove_stale_temp_files, write_json, writer_lock
from nas.latency.meter import LatencyMeter
from nas.search.config import SearchConfig
from nas.search.objective import Objective
from nas.search.predicted import run_predicted_search
from nas.search.results import write_outputs
from nas.search.strategies import DIRECTIONS, STRATEGIES
from nas.subnet.inherit import TrainedSupernet


def open_study(cfg: SearchConfig, measures: str) -> optuna.Study:
    """Create or load the study, which keeps its budgets (``measures``: what its latency times);
    heartbeats let a killed worker's trial be failed and retried."""
    strategy = STRATEGIES[cfg.sampler]
    directions = [DIRECTIONS[name] for name in strategy.objectives]
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
    sampler = strategy.sampler(cfg.seed, cfg.population)
    study = optuna.create_study(study_name=cfg.study, storage=storage, sampler=sampler,
                                directions=directions, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise PoseNASError(f"study {cfg.study!r} in {cfg.storage_url} was created with other objectives "
                           f"({[d.name.lower() for d in study.directions]}); use another --study")
    keep_budgets(study, cfg, measures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(strategy.objectives))  # labels for optuna-dashboard
    return study


def keep_budgets(study: optuna.Study, cfg: SearchConfig, measures: str) -> None:
    """A study is judged by the budgets it was created with: a resumed search with others would
    mix trials judged by two rules, so it is refused."""
    budgets = {"latency_budget_ms": cfg.latency_budget_ms, "macs_budget": cfg.macs_budget, "latency_of": measures,
               **({"latency_stat": cfg.latency_stat} if cfg.latency_stat != "median" else {})}  # as studies before it
    kept = study.user_attrs.get("budgets")
    if kept is None:
        study.set_user_attr("budgets", budgets)
    elif kept != budgets:
        raise PoseNASError(f"study {cfg.study!r} in {cfg.storage_url} was searched under latency budget "
                           f"{kept['latency_budget_ms']} ms ({kept['latency_of']}), MACs budget {kept['macs_budget']}; "
                           f"resume it with those, or search under new budgets in another --out or --study")


def run_search(cfg: SearchConfig, meter: LatencyMeter, progress: bool = True,
               supernet: TrainedSupernet | None = None) -> dict:
    """Fill the study (or, with an accuracy predictor, search on predictions and verify); write the
    outputs. One search writes an ``out`` at a time. ``supernet``: ``search_supernet(cfg)``, where
    the caller has it loaded already."""
    with writer_lock(cfg.out):
        if cfg.accuracy_predictor:
            return run_predicted_search(cfg, meter, progress, supernet)
        return _run_search(cfg, meter, progress, supernet)


def _run_search(cfg: SearchConfig, meter: LatencyMeter, progress: bool, supernet: TrainedSupernet | None) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = Objective(cfg, meter, supernet)
    floor = objective.check_budgets()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(cfg.out)
    study = open_study(cfg, meter.settings.measures)
    study.set_user_attr("evaluation", objective.evaluation)  # lets an accuracy predictor reuse these trials
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done:
        print(f"resuming study {cfg.study!r}: {done} of {cfg.trials} trials complete")
    if done < cfg.trials:
        study.optimize(objective, n_trials=cfg.trials - done, show_progress_bar=progress,
                       timeout=cfg.timeout_min * 60 if cfg.timeout_min else None,
                       callbacks=[MaxTrialsCallback(cfg.trials, states=(TrialState.COMPLETE,))])
    summary = {**write_outputs(study, cfg, meter.settings.measures, meter.settings.target), **floor}
    write_json(Path(cfg.out) / "search.json", summary, indent=1)
    return summary
