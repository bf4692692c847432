"""Several `posenas search` worker processes sharing one study on a real PostgreSQL server."""
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from nas.search.results import pareto_front, trial_table

POSENAS = str(Path(sys.executable).with_name("posenas"))
TRIALS, WORKERS = 12, 3
pytestmark = pytest.mark.slow  # three worker processes and a database server


def _worker(tmp_path, supernet, data, storage, seed):
    return [POSENAS, "search", "--supernet", str(supernet), "--data", str(data), "--latency-budget", "1000",
            "--trials", str(TRIALS), "--storage", storage, "--study", "shared", "--eval-images", "4",
            "--calib-images", "8", "--seed", str(seed), "--repeats", "3", "--warmup", "1",
            "--cache", str(tmp_path / "latency.sqlite"), "--out", str(tmp_path / f"worker{seed}")]


def test_three_workers_share_one_postgres_study(tmp_path, tiny_supernet, synth_small, postgres_url):
    procs = [subprocess.Popen(_worker(tmp_path, tiny_supernet, synth_small, postgres_url, seed),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(WORKERS)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # no trial lost: numbers are dense and every trial finished; none duplicated: one record each
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len(complete) == len(trials)
    # --trials counts the study's completed trials; workers in flight may each finish one more
    assert TRIALS <= len(complete) <= TRIALS + WORKERS - 1
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == WORKERS, "every worker ran trials"
    # a resumed worker writes the outputs of the whole study: union of all workers' trials
    done = subprocess.run(_worker(tmp_path, tiny_supernet, synth_small, postgres_url, 9), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and f"{len(complete)} of {TRIALS} trials complete" in done.stdout
    table = pd.read_csv(tmp_path / "worker9" / "trials.csv")
    assert sorted(table["number"]) == sorted(t.number for t in complete)
    pareto = json.loads((tmp_path / "worker9" / "pareto.json").read_text())["pareto"]
    expected = pareto_front(trial_table(study))
    assert [p["number"] for p in pareto] == [int(n) for n in expected["number"]]
