"""A search over several deployment targets a user may choose among (fp32 or int8 on one runtime,
or one runtime or another): one search per target, each with its own latency model, cache and AP
as that target runs it, then one front over all of them, every point deployed on the target it
was found for. The front picks per subnet: int8 where it is faster at the same AP, fp32 where
quantizing costs AP or time.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nas.io import read_json, write_json, write_text
from nas.latency.settings import target_folder_name
from nas.search.predicted import VERIFIED
from nas.search.results import hypervolume, pareto_front


def target_folder(out: str | Path, target: str) -> Path:
    """Where the search for ``target`` writes, under the search folder ``out``."""
    return Path(out) / target_folder_name(target)


def front_over(fronts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The points of the targets' fronts (target -> points with AP and latency_ms) that no other
    point beats on both, each with its target."""
    points = pd.concat([front.assign(target=target) for target, front in fronts.items()], ignore_index=True)
    if points.empty:
        return points
    return pareto_front(points.assign(feasible=True, evaluated=True)).drop(columns=["feasible", "evaluated"])


def merge_searches(targets: list[str], out: str | Path) -> dict:
    """One front from the searches of ``targets`` (each in its ``target_folder``): out/pareto.json,
    each point with its target, and out/trials.csv (and verified.csv) with every row's target."""
    out = Path(out)
    fronts = {target: read_json(target_folder(out, target) / "pareto.json", "Pareto file") for target in targets}
    first = fronts[targets[0]]
    front = front_over({target: pd.DataFrame(pareto["pareto"]) for target, pareto in fronts.items()})
    pareto = front.to_dict("records")
    for name in ("trials.csv", VERIFIED):
        tables = [pd.read_csv(target_folder(out, t) / name).assign(target=t) for t in targets
                  if (target_folder(out, t) / name).is_file()]
        if tables:
            write_text(out / name, pd.concat(tables, ignore_index=True).to_csv(index=False))
    write_json(out / "pareto.json", {"targets": targets, "latency_of": first["latency_of"],
                                     "latency_stat": first.get("latency_stat", "median"),
                                     "latency_budget_ms": first["latency_budget_ms"],
                                     "macs_budget": first["macs_budget"], "pareto": pareto}, indent=1)
    return {"pareto": len(pareto), "best_ap": max((p["AP"] for p in pareto), default=None),
            "hypervolume": hypervolume(front, first["latency_budget_ms"]) if pareto else 0.0,
            "picked": {t: sum(p["target"] == t for p in pareto) for t in targets}}
