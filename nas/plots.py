"""Figures, drawn and saved one way: off-screen (Agg), written whole or not at all, then closed."""
from __future__ import annotations

import os

import numpy as np

from nas.io import atomic_write


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the off-screen backend: (figure, axes)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save(fig, *paths: str | os.PathLike, dpi: int = 110) -> None:
    """Write ``fig`` to each path (its format from the suffix), atomically; then close it."""
    import matplotlib.pyplot as plt

    for path in paths:
        atomic_write(path, lambda tmp, path=path: fig.savefig(tmp, dpi=dpi, format=str(path).rsplit(".", 1)[-1]))
    plt.close(fig)


def against_diagonal(ax, x, y, band: float | None = None, **style) -> None:
    """The line y = x across both series (from 0), with a +/- ``band`` share shaded where given."""
    hi = float(max(np.max(x), np.max(y), 0.05)) * 1.05
    xs = np.linspace(0, hi, 50)
    ax.plot(xs, xs, **({"color": "k", "lw": 0.8} | style))
    if band:
        ax.fill_between(xs, (1 - band) * xs, (1 + band) * xs, color="grey", alpha=0.2, label=f"+/-{band:.0%}")


def predicted_against_measured(table, measured: str, predicted: str, path, xlabel: str, ylabel: str, title: str,
                               band: float | None = None) -> None:
    """A predictor's figure: fitted and held-out subnets (``table["split"]``) against the diagonal."""
    fig, ax = subplots(figsize=(5, 5))
    for split, marker in (("fit", "o"), ("held-out", "s")):
        part = table[table["split"] == split]
        ax.scatter(part[measured], part[predicted], marker=marker, s=18, label=split, alpha=0.7)
    against_diagonal(ax, table[measured], table[predicted], band)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)
