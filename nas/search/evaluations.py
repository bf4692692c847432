"""Every inherited AP a search measured, kept in the user's cache by what makes two of them
comparable (``evaluation_key``: the same weights, data and scoring).

A subnet evaluated once is not evaluated again by a later search of the same supernet and data,
and the accuracy predictor of the next search is refitted on all of them: searches verify where
the predictor matters most, at the top of the front. SQLite, as the latency cache: several
workers may write at once, and a killed writer leaves the table whole.
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nas.errors import PoseNASError
from nas.io import cache_folder
from search_spaces import SearchSpace, SpaceError, arch_hash

FILE = "evaluations.db"
MOST = 100_000  # evaluations read back for a refit: a search adds about 16


class Evaluations:
    """The evaluations of one ``evaluation_key`` in ``folder`` (default: the user's cache)."""

    def __init__(self, key: dict, folder: str | Path | None = None):
        self.path = Path(folder or cache_folder()) / FILE
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._table() as db:
            db.execute("CREATE TABLE IF NOT EXISTS evaluations (evaluation TEXT, arch_hash TEXT, arch TEXT, "
                       "metrics TEXT, evaluated_at REAL, PRIMARY KEY (evaluation, arch_hash))")

    @contextmanager
    def _table(self) -> Iterator[sqlite3.Connection]:
        """A connection for one transaction, closed after it; a file that is not SQLite is one line."""
        db = None
        try:
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        except sqlite3.DatabaseError as e:
            raise PoseNASError(f"{self.path}: not a readable evaluation cache ({e}); delete it to start "
                               f"a new one") from None
        finally:
            if db is not None:
                db.close()

    def get(self, arch: dict) -> dict | None:
        """The metrics of ``arch`` evaluated before, if it was."""
        with self._table() as db:
            row = db.execute("SELECT metrics FROM evaluations WHERE evaluation=? AND arch_hash=?",
                             (self.key, arch_hash(arch))).fetchone()
        return metrics_of(row[0], f"{self.path} ({arch_hash(arch)})") if row else None

    def put(self, arch: dict, metrics: dict) -> None:
        with self._table() as db:
            db.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?)",
                       (self.key, arch_hash(arch), json.dumps(arch, separators=(",", ":")), json.dumps(metrics),
                        time.time()))

    def all(self, space: SearchSpace) -> tuple[list[dict], list[float]]:
        """Every evaluated subnet of ``space`` (its arch config checked as any) and its AP (0 where
        nobody was found, as a search scores it), the most recent ``MOST``."""
        with self._table() as db:
            rows = db.execute("SELECT arch_hash, arch, metrics FROM evaluations WHERE evaluation=? "
                              "ORDER BY evaluated_at DESC LIMIT ?", (self.key, MOST)).fetchall()
        archs, aps = [], []
        for digest, arch, metrics in rows:
            where = f"{self.path} ({digest})"
            try:
                archs.append(space.validate(json.loads(arch), where))
            except (SpaceError, json.JSONDecodeError) as e:
                raise PoseNASError(f"{where}: a damaged evaluation ({e}); delete {self.path} to start a new "
                                   f"cache") from None
            ap = metrics_of(metrics, where)["AP"]
            aps.append(scored(ap))
        return archs, aps


def scored(ap: float) -> float:
    """An AP as a search scores it: 0 where nobody was found (COCO's NaN)."""
    return ap if ap == ap else 0.0


def metrics_of(text: str, where: str) -> dict:
    """Stored metrics, checked: an AP between 0 and 1 (0 where nobody was found)."""
    try:
        metrics = json.loads(text)
        ap = metrics["AP"]
        if not isinstance(ap, (int, float)) or not (math.isnan(ap) or 0 <= ap <= 1):
            raise ValueError(f"AP {ap!r}")
        return metrics
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise PoseNASError(f"{where}: a damaged evaluation ({type(e).__name__}: {e})") from None
