"""A new budget in seconds: the search strategy (NSGA-II by default) on predicted AP and predicted
latency, then the best predicted subnets verified by real measurement, and a local search around
the verified winners (``nas.search.local``).

A subnet whose inherited AP is known for the same weights and data (the accuracy predictor's samples
and, refitted, what earlier searches evaluated) joins the trials with that AP instead of a
prediction: the predictor blurs the top, where a known AP is exact, and a later search starts from
the best any earlier one found.

Thousands of predicted trials cost less than one real one, so the search itself runs in an
in-memory study in seconds (OFA's accuracy predictor plus a latency model). Predictions are not
results: the best predicted subnet of each latency band up to the budget gets a real measured
latency and a real inherited AP through the same ``Objective.assess`` a direct search uses, and
only those verified figures make ``pareto.json``'s front (the predicted ones stand beside them).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from tqdm import tqdm

from nas.errors import PoseNASError
from nas.io import remove_stale_temp_files, write_json, write_text
from nas.latency.meter import LatencyMeter
from nas.search.accuracy import AccuracyPredictor
from nas.search.config import SearchConfig
from nas.search.local import refine
from nas.search.objective import Objective
from nas.search.results import hypervolume, pareto_front
from nas.search.strategies import DIRECTIONS, STRATEGIES
from nas.subnet.inherit import TrainedSupernet
from search_spaces import arch_hash
from supernet.cost import arch_cost

GENERATION = 50  # the population of the predicted search (NSGA-II's generation size)
NEW_BUDGET_SECONDS = 120  # a new budget is searched and verified in this time: no local round ends later
VERIFIED = "verified.csv"  # the candidates with their measured figures beside the predicted ones


def trial_row(objective: Objective, number: int, arch: dict, ap: float, predicted_ap: float,
              known: bool) -> tuple[dict, dict[str, float]]:
    """A trial of the table (the AP it is ranked by, its prediction, its predicted latency, MACs and
    feasibility) and how far it is over each budget."""
    macs, latency = arch_cost(arch, objective.k).macs, objective.predicted_latency(arch)
    over = objective.cfg.over_budgets(macs, latency)
    return {"number": number, "AP": float(ap), "latency_ms": latency, "macs": macs, "arch_hash": arch_hash(arch),
            "arch": json.dumps(arch, separators=(",", ":")), "feasible": max(over.values()) <= 0, "evaluated": True,
            "predicted_AP": float(predicted_ap), "known": known}, over


def predicted_trials(objective: Objective, accuracy: AccuracyPredictor, trials: int, seed: int | None,
                     progress: bool) -> pd.DataFrame:
    """The search strategy's sampler (``cfg.sampler``; NSGA-II by default) over ``trials`` predicted
    subnets, one generation asked and predicted at a time."""
    cfg, space = objective.cfg, objective.space
    strategy = STRATEGIES[cfg.sampler]
    study = optuna.create_study(directions=[DIRECTIONS[name] for name in strategy.objectives],
                                sampler=strategy.sampler(seed, GENERATION))
    rows = []
    with tqdm(total=trials, desc="predicted trials", disable=not progress) as bar:
        while len(rows) < trials:
            asked = [study.ask() for _ in range(min(GENERATION, trials - len(rows)))]
            archs = [space.suggest(t) for t in asked]
            aps = accuracy.predict(archs)
            for trial, arch, ap in zip(asked, archs, aps):
                row, over = trial_row(objective, trial.number, arch, ap, ap, known=False)
                for name, value in over.items():
                    trial.set_constraint(name, value)
                study.tell(trial, [row[name] for name in strategy.objectives])
                rows.append(row)
            bar.update(len(asked))
    return pd.DataFrame(rows).drop_duplicates("arch_hash")


def known_trials(objective: Objective, accuracy: AccuracyPredictor, known: list[tuple[dict, float]],
                 first_number: int) -> pd.DataFrame:
    """``known`` subnets (arch config, inherited AP) as trials ranked by that AP, numbered on from
    ``first_number``."""
    predicted = accuracy.predict([arch for arch, _ in known]) if known else []
    return pd.DataFrame([trial_row(objective, number, arch, ap, guess, known=True)[0] for number, (arch, ap), guess
                         in zip(range(first_number, first_number + len(known)), known, predicted)])


def candidates(table: pd.DataFrame, count: int) -> pd.DataFrame:
    """The best predicted subnet in each of ``count`` equal latency bands of the feasible trials,
    fastest first. Not the predicted front's points: where the predictor plateaus (trees predict
    piecewise constants) the predicted front ends early, and the subnets nearer the budget would
    never be measured (zoo:cpu-synth's 150-subnet predictor: a front ending at 3.4 ms of 6)."""
    feasible = table[table["feasible"]]
    if feasible.empty:
        return feasible
    low, span = feasible["latency_ms"].min(), np.ptp(feasible["latency_ms"].to_numpy())
    band = np.minimum(((feasible["latency_ms"] - low) / max(span, 1e-9) * count).astype(int), count - 1)
    return feasible.loc[feasible.groupby(band)["AP"].idxmax()].sort_values("latency_ms")


def run_predicted_search(cfg: SearchConfig, meter: LatencyMeter, progress: bool = True,
                         supernet: TrainedSupernet | None = None) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    objective = Objective(cfg, meter, supernet)
    if objective.predictor is None:
        raise PoseNASError("--accuracy-predictor needs a latency model too: give --predictor LATENCY.json "
                           "(posenas latency build-predictor)")
    accuracy = AccuracyPredictor.load(cfg.accuracy_predictor)
    if accuracy.space.networks() != objective.space.networks():
        raise PoseNASError(f"{cfg.accuracy_predictor}: fitted on space {accuracy.space.name!r}, not on this "
                           f"supernet's space {objective.space.name!r}")
    fitted_for = accuracy.info.get("evaluation", {}).get("supernet")
    if fitted_for != objective.supernet.identity:
        raise PoseNASError(f"{cfg.accuracy_predictor}: fitted for other supernet weights than {cfg.supernet}; "
                           f"build one for it (posenas predictor build)")
    same_data = accuracy.info.get("evaluation") == objective.evaluation
    if cfg.refit and accuracy.samples and same_data:
        archs, aps = objective.evaluations.all(objective.space)
        if archs:
            accuracy = accuracy.refit(archs, aps, cfg.seed or 0)
            print(f"accuracy predictor refitted with {accuracy.info['refitted_with']} subnets that earlier "
                  f"searches evaluated")
    known = accuracy.samples if same_data else []
    objective.known = {arch_hash(arch): ap for arch, ap in known}  # verified by latency alone
    floor = objective.check_budgets()
    start = time.perf_counter()
    table = predicted_trials(objective, accuracy, cfg.predicted_trials, cfg.seed, progress)
    table = pd.concat([known_trials(objective, accuracy, known, len(table)), table],
                      ignore_index=True).drop_duplicates("arch_hash")
    search_s = time.perf_counter() - start
    chosen = candidates(table, cfg.verify)
    if chosen.empty:
        raise PoseNASError(f"no subnet of {cfg.predicted_trials} predicted trials meets the budgets by the latency "
                           f"model {cfg.predictor}; check that it was built for this device")
    verified = []
    for _, row in tqdm(list(chosen.iterrows()), desc="verifying the best predicted subnets", disable=not progress):
        attrs = objective.assess(json.loads(row["arch"]), measure=True)
        verified.append({**attrs, "number": int(row["number"]), "predicted_AP": row["predicted_AP"],
                         "predicted_latency_ms": row["latency_ms"], "known": bool(row["known"]), "local": False,
                         "round": 0})
    checked = refine(objective, accuracy, pd.DataFrame(verified), cfg.refine, cfg.seed, progress,
                     int(table["number"].max()) + 1,
                     lambda: NEW_BUDGET_SECONDS - (time.perf_counter() - start))
    front = pareto_front(checked)
    pareto = [{"number": int(r["number"]), "AP": r["AP"], "latency_ms": r["latency_ms"],
               "predicted_AP": r["predicted_AP"], "predicted_latency_ms": r["predicted_latency_ms"],
               "macs": int(r["macs"]), "params": int(r["params"]), "arch_hash": r["arch_hash"],
               "arch": json.loads(r["arch"])} for _, r in front.iterrows()]
    write_text(out / "trials.csv", table.to_csv(index=False))
    write_text(out / VERIFIED, checked.to_csv(index=False))
    write_json(out / "pareto.json", {"strategy": "predicted", "accuracy_predictor": cfg.accuracy_predictor,
                                     "latency_predictor": cfg.predictor, "targets": [meter.settings.target],
                                     "latency_of": meter.settings.measures, "latency_stat": cfg.latency_stat,
                                     "latency_budget_ms": cfg.latency_budget_ms, "macs_budget": cfg.macs_budget,
                                     "pareto": pareto}, indent=1)
    summary = {"trials": len(table), "predicted_feasible": int(table["feasible"].sum()), "verified": len(checked),
               "local": int(checked["local"].sum()),
               "verified_feasible": int(checked["feasible"].sum()),
               "feasible_share": float(checked["feasible"].mean()) if len(checked) else None,
               "pareto": len(pareto), "best_ap": max((p["AP"] for p in pareto), default=None),
               "hypervolume": hypervolume(front, cfg.latency_budget_ms), "search_s": search_s,
               "total_s": time.perf_counter() - start, **floor}
    write_json(out / "search.json", summary, indent=1)
    return summary
