"""Regret of a search: how much AP it leaves on the table under a budget.

The reference under a budget is the best verified subnet any search found under it, whatever
budget that search had (the union of their verified subnets, whose latencies a shared cache makes
the same figures); a search's regret is the reference AP less the best AP it returned under that
budget. A search that is good returns
the reference from every seed.
"""
from __future__ import annotations

import pandas as pd


def best_under(verified: pd.DataFrame, budget_ms: float) -> float:
    """The best AP among evaluated subnets measured within ``budget_ms`` (0 where there is none)."""
    within = verified[verified["evaluated"] & (verified["latency_ms"] <= budget_ms)]
    return float(within["AP"].max()) if len(within) else 0.0


def regret_table(runs: dict[tuple[float, int], pd.DataFrame],
                 reference: dict[tuple[float, int], pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per (budget, seed) search of ``runs`` (its verified subnets): the best AP it found
    under its budget, the reference (the best any search of ``reference``, by default of ``runs``,
    verified under that budget) and the regret."""
    union, rows = pd.concat((reference or runs).values(), ignore_index=True), []
    for budget in sorted({b for b, _ in runs}):
        reference = best_under(union, budget)
        for (b, seed), verified in sorted(runs.items()):
            if b == budget:
                found = best_under(verified, budget)
                rows.append({"budget_ms": budget, "seed": seed, "best_AP": found, "reference_AP": reference,
                             "regret": reference - found})
    return pd.DataFrame(rows)
