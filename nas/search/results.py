"""What a search leaves: the trial table, the Pareto front and its hypervolume, the output files,
and the winners a later stage takes from ``pareto.json``."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from nas.config import is_kind
from nas.errors import PoseNASError
from nas.io import read_json, write_json, write_text
from nas.search.config import SearchConfig


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


def write_outputs(study: optuna.Study, cfg: SearchConfig, latency_of: str, target: str) -> dict:
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
                                     "targets": [target], "latency_of": latency_of, "latency_stat": cfg.latency_stat,
                                     "latency_budget_ms": cfg.latency_budget_ms,
                                     "macs_budget": cfg.macs_budget, "pareto": pareto}, indent=1)
    return {"trials": len(table), "feasible": int(table["feasible"].sum()), "pareto": len(pareto),
            "best_ap": max((p["AP"] for p in pareto), default=None),
            "hypervolume": hypervolume(front, cfg.latency_budget_ms)}


def pareto_winners(path: str | Path, top: int) -> list[dict]:
    """The ``top`` points of a search's pareto.json (each its ``arch`` and, from a search over
    several targets, its ``target``), best AP first."""
    pareto = read_json(path, "Pareto file")
    if not isinstance(pareto, dict) or not isinstance(pareto.get("pareto"), list):
        raise PoseNASError(f"{path}: not a pareto.json of posenas search (needs a 'pareto' list)")
    if not pareto["pareto"]:
        raise PoseNASError(f"{path}: the Pareto set is empty (no feasible trial was evaluated)")
    if top < 1:
        raise PoseNASError(f"--top must be at least 1, got {top}")
    for i, p in enumerate(pareto["pareto"]):
        if not (isinstance(p, dict) and isinstance(p.get("arch"), dict) and is_kind(p.get("AP"), (int, float))):
            raise PoseNASError(f"{path}: pareto[{i}] needs an 'arch' config and a numeric 'AP'")
    return sorted(pareto["pareto"], key=lambda p: p["AP"], reverse=True)[:top]
