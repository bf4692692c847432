"""What a run shows: the accuracy-latency Pareto plot (PNG and SVG, with AP against MACs beside it)
and the summary table of presets, Pareto set and finetuned winners (CSV and Markdown).

Every trial is a point (infeasible ones grey), the Pareto set is joined, the latency budget is a
dashed line, the presets are labelled baselines, and finetuned winners get an arrow from their
inherited AP to their finetuned AP. Labels are placed by adjustText so that none overlap.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nas.app.runs import RunLayout
from nas.errors import PoseNASError
from nas.io import read_json, write_text
from nas.plots import save, subplots
from nas.pose.evaluate import CROWD_LEVELS
from nas.search.predicted import VERIFIED
from nas.search.results import pareto_front
from nas.subnet.export import CARD
from nas.train.finetune import EXPORT, RECORD
from search_spaces.space import with_defaults


def search_folder(run: RunLayout) -> Path:
    """The folder holding trials.csv: the run itself (a search's --out) or its search/ stage."""
    for folder in (run.root, run.search):
        if (folder / "trials.csv").is_file() and (folder / "pareto.json").is_file():
            return folder
    raise PoseNASError(f"{run.root}: no search results (trials.csv and pareto.json, here or in search/)")


def finetuned(run: RunLayout) -> pd.DataFrame:
    """One row per finetuned winner: inherited and finetuned AP (and AP by crowding, on a set that
    has it), latency and MACs from its export card."""
    rows = []
    for folder in run.winners():
        record, card = read_json(folder / RECORD), read_json(folder / EXPORT / CARD)
        rows.append({"winner": folder.name, "head": with_defaults(record["arch"])["head"]["type"],
                     "AP_inherited": record["before"]["AP"],
                     "AP_finetuned": record["after"]["AP"], "latency_ms": card.get("latency", {}).get("median_ms"),
                     "macs": card["macs"], "export": str(folder / EXPORT),
                     **{level: record["after"][level] for level in CROWD_LEVELS if level in record["after"]}})
    return pd.DataFrame(rows)


def summary_table(run: RunLayout) -> pd.DataFrame:
    """Presets, the Pareto set and the finetuned winners: AP, latency and MACs side by side."""
    rows = []
    if run.baselines.exists():
        for _, r in pd.read_csv(run.baselines).iterrows():
            rows.append({"kind": "preset", "name": r["preset"], "AP_inherited": r["AP"],
                         "latency_ms": r["latency_ms"], "GMACs": r["macs"] / 1e9})
    for p in read_json(run.pareto)["pareto"]:
        rows.append({"kind": "pareto", "name": f"trial {p['number']}", "head": with_defaults(p["arch"])["head"]["type"],
                     "AP_inherited": p["AP"], "latency_ms": p["latency_ms"], "GMACs": p["macs"] / 1e9})
    for _, w in finetuned(run).iterrows():
        rows.append({"kind": "winner", "name": w["winner"], "head": w["head"], "AP_inherited": w["AP_inherited"],
                     "AP_finetuned": w["AP_finetuned"], "latency_ms": w["latency_ms"], "GMACs": w["macs"] / 1e9,
                     "export": w["export"], **{level: w[level] for level in CROWD_LEVELS if level in w}})
    return pd.DataFrame(rows)


def write_summary(run: RunLayout) -> None:
    table = summary_table(run)
    write_text(run.summary("csv"), table.to_csv(index=False))
    cells = table.astype(object).where(table.notna(), None)  # empty cells, not "nan"
    write_text(run.summary("md"), cells.to_markdown(index=False, floatfmt=".4g", missingval="") + "\n")


def plot_run(run: str | Path) -> list[Path]:
    """Draw ``pareto.png`` and ``pareto.svg`` into the run folder; returns their paths."""
    from adjustText import adjust_text

    run = RunLayout(Path(run))
    folder = search_folder(run)
    trials = pd.read_csv(folder / "trials.csv")
    predicted = None
    if (folder / VERIFIED).is_file():  # a search on predictions: its measured points are the verified ones
        predicted, trials = trials, pd.read_csv(folder / VERIFIED)
    pareto = read_json(folder / "pareto.json")
    budget, latency_of = pareto["latency_budget_ms"], pareto.get("latency_of", "network")
    stat = pareto.get("latency_stat", "median")
    baselines = pd.read_csv(run.baselines) if run.baselines.is_file() else pd.DataFrame()
    winners = finetuned(run)
    trials["gmacs"] = trials["macs"] / 1e9
    trials["head"] = [with_defaults(json.loads(arch))["head"]["type"] for arch in trials["arch"]]
    feasible = trials["feasible"] & trials["evaluated"]
    front = pareto_front(trials)

    fig, axes = subplots(1, 2, figsize=(13, 5.2))
    on = ", ".join(pareto.get("targets", ["onnxruntime/fp32/1"]))  # a search before targets: onnxruntime's
    for ax, x, xlabel in ((axes[0], "latency_ms", f"latency (ms, {stat} {latency_of}, {on})"),
                          (axes[1], "gmacs", "GMACs")):
        if predicted is not None:
            px = predicted[x] if x == "latency_ms" else predicted["macs"] / 1e9
            ax.scatter(px, predicted["AP"], s=6, color="tab:cyan", alpha=0.25,
                       label="predicted trial (predicted AP and latency)")
        ax.scatter(trials.loc[~feasible, x], trials.loc[~feasible, "AP"], s=18, color="0.78",
                   label="infeasible trial (not evaluated)")
        ax.scatter(trials.loc[feasible, x], trials.loc[feasible, "AP"], s=22, color="tab:blue", alpha=0.7,
                   label="feasible trial (inherited AP, measured)")
        ax.plot(front[x] if x != "gmacs" else front["macs"] / 1e9, front["AP"], "-o", color="tab:red", ms=5,
                label="Pareto set")
        for column, size in (("head", 60), ("target", 110)):  # across heads or targets: which each point uses
            if column in trials and trials.loc[feasible, column].nunique() > 1:
                for kind, marker in zip(sorted(trials[column].unique()), "sD^v"):
                    on = front[front[column] == kind]
                    ax.scatter(on[x] if x != "gmacs" else on["macs"] / 1e9, on["AP"], marker=marker, s=size,
                               facecolors="none", edgecolors="k", zorder=4, label=f"Pareto set, {kind} {column}")
        labels = []
        if not baselines.empty:
            bx = baselines["latency_ms"] if x == "latency_ms" else baselines["macs"] / 1e9
            ax.scatter(bx, baselines["AP"], marker="*", s=120, color="tab:green", zorder=3,
                       label="preset (inherited AP)")
            labels += [ax.text(px, py, name, fontsize=8) for px, py, name in zip(bx, baselines["AP"],
                                                                                baselines["preset"])]
        if not winners.empty:
            wx = winners["latency_ms"] if x == "latency_ms" else winners["macs"] / 1e9
            for px, before, after in zip(wx, winners["AP_inherited"], winners["AP_finetuned"]):
                ax.annotate("", xy=(px, after), xytext=(px, before),
                            arrowprops={"arrowstyle": "->", "color": "tab:purple", "lw": 1.5})
            ax.scatter(wx, winners["AP_finetuned"], marker="D", s=40, color="tab:purple", zorder=3,
                       label="finetuned winner")
        if x == "latency_ms":
            ax.axvline(budget, ls="--", color="k", lw=1, label=f"latency budget {budget:g} ms")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("COCO keypoint AP (held-out)")
        ax.set_ylim(0, max(0.05, 1.15 * max([trials["AP"].max(), *baselines.get("AP", []),
                                              *winners.get("AP_finetuned", [])])))
        ax.grid(alpha=0.3)
        if labels:
            adjust_text(labels, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5})
    axes[0].set_title("accuracy against measured latency")
    axes[1].set_title("accuracy against MACs")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    paths = [run.pareto_plot.with_suffix(f".{fmt}") for fmt in ("png", "svg")]
    save(fig, *paths, dpi=120)
    return paths
