"""A training run's folder, shared by every trainer: its checkpoint (written atomically, read back
weights-only), ``log.csv`` and ``curves.png``, and the exact resume of the torch RNG."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from nas.io import atomic_write, remove_stale_temp_files, write_text


class RunFolder:
    def __init__(self, out: str | Path, checkpoint: str, plot: Callable[[pd.DataFrame, Path], None],
                 writer: bool = True):
        """``writer``: this process writes the folder (every process but rank 0 of a
        distributed run only reads it); a writer first removes what a kill left half-written. The
        folder is made by the first save, so a run refused before it leaves nothing behind."""
        self.out, self.plot = Path(out), plot
        self.checkpoint = self.out / checkpoint
        if writer and self.out.is_dir():
            remove_stale_temp_files(self.out)

    def resume(self, device: torch.device | str = "cpu") -> dict | None:
        """The last checkpoint, with the torch RNG set back to where it was; None on a fresh run."""
        if not self.checkpoint.exists():
            return None
        state = torch.load(self.checkpoint, map_location=device, weights_only=True)
        torch.set_rng_state(state["torch_rng"].cpu())
        return state

    def save(self, state: dict, log: list[dict]) -> None:
        """The checkpoint (with the torch RNG), then the log and its curves."""
        state = {**state, "torch_rng": torch.get_rng_state(), "log": log}
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.checkpoint, lambda tmp: torch.save(state, tmp))
        if log:
            frame = pd.DataFrame(log)
            write_text(self.out / "log.csv", frame.to_csv(index=False))
            self.plot(frame, self.out / "curves.png")
