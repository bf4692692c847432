"""Search strategies by name: each an Optuna sampler and the objectives it optimises.

NSGA-II and random search optimise AP and latency together (a Pareto front); TPE optimises AP
alone under the budgets. NSGA-II and TPE read each trial's constraints (``Trial.set_constraint``)
themselves, so infeasible subnets rank below every feasible one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import optuna


@dataclass(frozen=True)
class Strategy:
    sampler: Callable[[int | None, int], optuna.samplers.BaseSampler]  # (seed, NSGA-II population) -> sampler
    objectives: tuple[str, ...]  # maximised AP first, then minimised latency when present


STRATEGIES = {
    "nsga2": Strategy(lambda seed, population: optuna.samplers.NSGAIISampler(population_size=population, seed=seed),
                      ("AP", "latency_ms")),
    "tpe": Strategy(lambda seed, population: optuna.samplers.TPESampler(seed=seed), ("AP",)),
    "random": Strategy(lambda seed, population: optuna.samplers.RandomSampler(seed=seed), ("AP", "latency_ms")),
}
DIRECTIONS = {"AP": "maximize", "latency_ms": "minimize"}
