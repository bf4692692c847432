"""Local search after the verification of a search on predictions: mutations of the verified
winners, evaluated for real, round by round, until the verified front stops moving.

The accuracy predictor ranks well on average and blurs at the top, where the search looks: eight
verifications from one seed sample that blur, so two seeds can hand a user subnets 0.03-0.05 AP
apart. Near a verified subnet the predictor's error is much like the subnet's own, so each
mutation is ranked by its predicted AP corrected by its parent's measured error, and the best
few per round get a real measured latency and a real inherited AP (a mutation evaluated before
on the same weights and data is ranked by its real AP). ``PATIENCE`` rounds in a row that raise
neither the best AP within the budgets nor the front's hypervolume end the search: the top of the
space is flat, so one still round often comes before a better one.
"""
from __future__ import annotations

import json
import math
import random
from typing import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from nas.search.accuracy import AccuracyPredictor
from nas.search.objective import Objective
from nas.search.results import hypervolume, pareto_front
from search_spaces import arch_hash
from supernet.cost import arch_cost

ROUND = 4  # real evaluations a round
PARENTS = 4  # the best verified subnets within the budgets mutated each round
MUTATIONS = 64  # mutations drawn per parent, ranked on predictions
STILL_AP = 0.002  # a round that raises the best feasible AP less than this ...
STILL_HYPERVOLUME = 0.005  # ... and the front's hypervolume by less than this share has not moved it
PATIENCE = 2  # still rounds in a row that end the local search


def front_moved(before: pd.DataFrame, after: pd.DataFrame, budget_ms: float) -> bool:
    """Whether the verified subnets ``after`` a round improved on those ``before`` it: a better
    feasible AP by ``STILL_AP``, or a larger hypervolume by ``STILL_HYPERVOLUME`` of it."""
    def best(table: pd.DataFrame) -> float:
        feasible = table[table["feasible"] & table["evaluated"]]
        return float(feasible["AP"].max()) if len(feasible) else 0.0

    old, new = (hypervolume(pareto_front(t), budget_ms) for t in (before, after))
    return best(after) >= best(before) + STILL_AP or new > old * (1 + STILL_HYPERVOLUME)


def proposals(objective: Objective, accuracy: AccuracyPredictor, verified: pd.DataFrame, rng: random.Random,
              count: int) -> list[tuple[dict, float]]:
    """The ``count`` mutations of the best verified subnets within the budgets with the highest
    predicted AP corrected by their parent's error (measured - predicted), or their AP where the
    objective knows it, each within the budgets by its predicted latency scaled as its
    parent's was (measured / predicted) and none verified before, with that latency; at most one
    per parent while others remain."""
    cfg, space = objective.cfg, objective.space
    feasible = verified[verified["feasible"] & verified["evaluated"]].nlargest(PARENTS, "AP")
    errors = (feasible["AP"] - feasible["predicted_AP"]).to_numpy(dtype=float)
    measured, predicted = (feasible[c].to_numpy(dtype=float) for c in ("latency_ms", "predicted_latency_ms"))
    scales = np.divide(measured, predicted, out=np.ones_like(measured), where=predicted > 0)  # 0: nothing to scale
    seen = set(verified["arch_hash"])
    pool, parents = [], []
    for parent, arch in enumerate(feasible["arch"].map(json.loads)):
        for _ in range(MUTATIONS):
            child = space.canonical(space.mutate(arch, rng))
            if arch_hash(child) in seen:
                continue
            seen.add(arch_hash(child))
            latency = objective.predicted_latency(child) * scales[parent]
            over = cfg.over_budgets(arch_cost(child, objective.k).macs, latency)
            if max(over.values()) <= 0:
                pool.append((child, latency))
                parents.append(parent)
    if not pool:
        return []
    expected = [objective.known.get(arch_hash(child), ap) for (child, _), ap in
                zip(pool, accuracy.predict([child for child, _ in pool]) + errors[parents])]
    firsts, rest, mutated = [], [], set()
    for i in np.argsort(-np.asarray(expected), kind="stable"):
        (rest if parents[i] in mutated else firsts).append(i)
        mutated.add(parents[i])
    return [pool[i] for i in (firsts + rest)[:count]]


def evaluation_seconds(verified: pd.DataFrame) -> float:
    """What a mutation's evaluation may take: as long as its slowest parent's took (the best
    verified subnets within the budgets, evaluated rather than read from the cache), else the
    slowest evaluated subnet's, else any verified subnet's. Not the median: the fast subnets and
    the cached ones would promise a round near the budget in half its time, and the mutations
    ranked first are often larger than their parents (a 12 ms round planned on the parents' mean
    ended 7 s past the 2 minutes)."""
    cached = verified.get("evaluation_cached", pd.Series(True, index=verified.index)).fillna(True).astype(bool)
    fresh = verified[verified["evaluated"] & ~cached]
    parents = fresh[fresh["feasible"]].nlargest(PARENTS, "AP")
    chosen = parents if len(parents) else fresh if len(fresh) else verified
    return float(chosen["trial_s"].max())


def evaluations_that_fit(seconds_left: float, seconds_per_evaluation: float) -> int:
    """How many evaluations of a round, each taking ``seconds_per_evaluation``, end within
    ``seconds_left``: a whole round where it fits, else as many as do (none past the time)."""
    fitting = seconds_left / max(seconds_per_evaluation, 1e-3)  # cached evaluations take no time
    return max(int(min(fitting, ROUND)), 0)


def refine(objective: Objective, accuracy: AccuracyPredictor, verified: pd.DataFrame, evaluations: int,
           seed: int | None, progress: bool, first_number: int = 0,
           seconds_left: Callable[[], float] = lambda: math.inf) -> pd.DataFrame:
    """``verified`` and the mutations evaluated after it, at most ``evaluations`` of them, in rounds
    of ``ROUND`` (fewer where no more end within ``seconds_left()``) until ``PATIENCE`` rounds in a
    row do not move the front (``front_moved``) or none would end in time; they are numbered on
    from ``first_number``."""
    rng, done, still, round_number = random.Random(seed), 0, 0, 0
    with tqdm(total=evaluations, desc="local search around the verified winners", disable=not progress) as bar:
        while (count := min(evaluations - done,
                            evaluations_that_fit(seconds_left(), evaluation_seconds(verified)))) > 0:
            chosen = proposals(objective, accuracy, verified, rng, count)
            if not chosen:
                break
            round_number += 1
            predicted = accuracy.predict([arch for arch, _ in chosen])
            rows = [{**objective.assess(arch, measure=True), "number": first_number + done + i,
                     "predicted_AP": float(ap), "predicted_latency_ms": latency,
                     "known": arch_hash(arch) in objective.known, "local": True, "round": round_number}
                    for i, ((arch, latency), ap) in enumerate(zip(chosen, predicted))]
            done += len(rows)
            bar.update(len(rows))
            before, verified = verified, pd.concat([verified, pd.DataFrame(rows)], ignore_index=True)
            still = 0 if front_moved(before, verified, objective.cfg.latency_budget_ms) else still + 1
            if still == PATIENCE:
                break
    return verified
