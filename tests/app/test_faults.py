"""The fault suite: real `posenas` processes killed with SIGKILL at a random moment, then resumed.

Nothing written before the last checkpoint may be lost, no file may be left half-written, and
the resumed run must end like an uninterrupted one. (Supernet training: test_supernet_train.)
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

POSENAS = str(Path(sys.executable).with_name("posenas"))
RNG = random.Random(os.getpid())
pytestmark = pytest.mark.slow  # each test runs three real posenas processes, one killed


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (or at the timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]


def _complete(storage: str) -> list:
    try:
        study = optuna.load_study(study_name="posenas", storage=storage)
    except (KeyError, Exception):  # noqa: BLE001 - not created yet, or the database is being written
        return []
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path, tiny_supernet, synth_small):
    out, trials = tmp_path / "search", 10
    command = [POSENAS, "search", "--supernet", str(tiny_supernet), "--data", str(synth_small), "--latency-budget",
               "1000", "--trials", str(trials), "--eval-images", "4", "--calib-images", "8", "--out", str(out),
               "--repeats", "3", "--warmup", "1", "--cache", str(tmp_path / "lat.sqlite"), "--seed", "3"]
    storage = f"sqlite:///{out / 'study.db'}"
    target = RNG.randint(1, 6)
    kill_when(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
              lambda: len(_complete(storage)) >= target)
    before = {t.number: t.params for t in _complete(storage)}
    assert target <= len(before) < trials, "killed mid-search"
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming study 'posenas': {len(before)} of {trials} trials complete" in resumed.stdout
    study = optuna.load_study(study_name="posenas", storage=storage)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(complete) == trials and len({t.number for t in complete}) == trials
    assert all(t.number in {c.number for c in complete} and before[t.number] == t.params
               for t in complete if t.number in before)
    assert set(before) <= {t.number for t in complete}, "a trial finished before the kill was lost"
    # the trial in flight at the kill is never counted as complete (its heartbeat goes stale)
    assert len(study.trials) - trials <= 1
    assert len(json.loads((out / "pareto.json").read_text())["pareto"]) >= 1 and no_temp_files(out)


def _finetune(tmp_path, tiny_supernet, synth_small, out):
    return [POSENAS, "finetune", "--supernet", str(tiny_supernet), "--arch", "max", "--val-data", str(synth_small),
            "--epochs", "4", "--batch-size", "8", "--workers", "0", "--repeats", "3", "--warmup", "1",
            "--cache", str(tmp_path / "lat.sqlite"), "--out", str(out)]


def test_killed_finetune_resumes_from_its_last_epoch(tmp_path, tiny_supernet, synth_small):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_finetune(tmp_path, tiny_supernet, synth_small, reference), check=True, capture_output=True,
                   timeout=600)
    target = RNG.randint(1, 3)

    def checkpoint_epoch() -> int:
        found = list(killed.glob("*/checkpoint.pt"))
        try:
            return torch.load(found[0], weights_only=True)["epoch"] if found else 0
        except Exception:  # noqa: BLE001 - read while being replaced
            return 0

    kill_when(subprocess.Popen(_finetune(tmp_path, tiny_supernet, synth_small, killed), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL), lambda: checkpoint_epoch() >= target)
    (folder,) = (p for p in killed.iterdir() if not p.name.startswith("."))  # a killed writer's lock file stays
    before = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert target <= before["epoch"] < 4 and not (folder / "export" / "card.json").exists()
    resumed = subprocess.run(_finetune(tmp_path, tiny_supernet, synth_small, killed), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0 and f"at epoch {before['epoch']}" in resumed.stdout
    (ref_folder,) = reference.iterdir()
    after, done = (torch.load(f / "checkpoint.pt", weights_only=True) for f in (folder, ref_folder))
    assert [(r["epoch"], r["step"]) for r in after["log"]] == [(r["epoch"], r["step"]) for r in done["log"]]
    same = json.dumps(after["log"][:before["epoch"]]) == json.dumps(before["log"])  # NaN-safe comparison
    assert same, "epochs before the kill are kept as they were"
    assert json.loads((folder / "before.json").read_text()) == json.loads((ref_folder / "before.json").read_text())
    card = json.loads((folder / "export" / "card.json").read_text())
    assert card["onnx"]["max_abs_difference"] <= 1e-4 and no_temp_files(killed)
