"""Training curves of either trainer: losses on a log scale, validation AP beside them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nas.plots import save, subplots


def plot_curves(log: pd.DataFrame, path: Path, x: str, losses: dict[str, str], metrics: dict[str, str],
                metrics_title: str | None = None) -> None:
    """``losses`` and ``metrics`` map log columns to labels; columns absent from the log are left
    out, and so is the AP panel when no metric was logged. Where the log has a ``phase`` column,
    each phase's end is marked and named."""
    metrics = {col: label for col, label in metrics.items() if col in log and log[col].notna().any()}
    fig, axes = subplots(1, 2 if metrics else 1, figsize=(10 if metrics else 5.5, 3.8), squeeze=False)
    a = axes[0][0]
    first = next(iter(losses))
    train = log.dropna(subset=[first]) if first in log else log.iloc[0:0]
    for col, label in losses.items():
        if col in train:
            a.plot(train[x], train[col], ".-", label=label)
    a.set_yscale("log"); a.set_xlabel(x); a.set_ylabel("training loss"); a.grid(alpha=0.3)
    if "phase" in train:
        for _, row in train.drop_duplicates("phase", keep="last").iterrows():  # where each phase ends
            a.axvline(row[x], color="grey", lw=0.5)
            a.annotate(row["phase"], (row[x], 0.98), xycoords=("data", "axes fraction"), fontsize=7,
                       rotation=90, va="top", ha="right")
    a.legend(fontsize=8, loc="lower right" if "phase" in train else "best")
    if metrics:
        b = axes[0][1]
        for col, label in metrics.items():
            val = log.dropna(subset=[col])
            b.plot(val[x], val[col], "o-", label=label)
        b.legend(title=metrics_title)
        b.set_xlabel(x); b.set_ylabel("validation COCO AP"); b.set_ylim(0, 1); b.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)
