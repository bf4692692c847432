"""The Optuna search on a real SQLite storage: trials, constraints, resume, outputs, dashboard."""
import json
import sys
from dataclasses import asdict, replace

import optuna
import pandas as pd
import pytest

from nas.app.cli import main
from nas.errors import PoseNASError
from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
from nas.latency.predictor import NAMES, LatencyPredictor
from nas.latency.settings import RuntimeSettings
from nas.search.config import SearchConfig
from nas.search.results import hypervolume, pareto_front
from nas.search.study import run_search
from search_spaces import SearchSpace
from supernet.cost import arch_cost
from tests.conftest import held_elsewhere

FAST = RuntimeSettings(warmup=1, repeats=5)


def config(tmp_path, supernet, data, **kw) -> SearchConfig:
    return SearchConfig(**{"supernet": str(supernet), "val_ann": str(data / "annotations.json"),
                           "val_images": str(data / "images"), "latency_budget_ms": 1000.0,
                           "out": str(tmp_path / "search"), "trials": 5, "eval_images": 6, "calib_images": 8,
                           "seed": 1, **kw})


def meter(tmp_path) -> LatencyMeter:
    return LatencyMeter(LocalBackend(FAST), LatencyCache(tmp_path / "latency.sqlite"))


def test_search_records_trials_resumes_and_writes_the_pareto_set(tmp_path, tiny_supernet, synth_small):
    space = SearchSpace.load("tiny")
    budget = (arch_cost(space.min()).macs + arch_cost(space.max()).macs) / 2
    cfg = config(tmp_path, tiny_supernet, synth_small, macs_budget=budget, trials=3)
    summary = run_search(cfg, meter(tmp_path), progress=False)
    out = tmp_path / "search"
    table = pd.read_csv(out / "trials.csv")
    assert summary["trials"] == len(table) == 3
    assert {"arch", "macs", "params", "latency_ms", "latency_p90_ms", "evaluated", "trial_s"} <= set(table.columns)
    for _, row in table.iterrows():  # infeasible by MACs: never evaluated, AP 0
        assert row["feasible"] == (row["macs"] <= budget)
        assert row["evaluated"] == row["feasible"] and (row["feasible"] or row["AP"] == 0.0)
        assert space.validate(json.loads(row["arch"]))
    assert table.loc[table["evaluated"], "calibration_s"].notna().all()
    pareto = json.loads((out / "pareto.json").read_text())
    assert all(p["arch"]["resolution"] in (64, 96) and p["macs"] <= budget for p in pareto["pareto"])
    # the same command with more trials resumes the study: no trial lost or repeated
    cfg.trials = 5
    run_search(cfg, meter(tmp_path), progress=False)
    table = pd.read_csv(out / "trials.csv")
    assert sorted(table["number"]) == list(range(5))
    study = optuna.load_study(study_name="posenas", storage=cfg.storage_url)
    assert len(study.trials) == 5 and study.metric_names == ["AP", "latency_ms"]
    assert table["latency_cached"].sum() >= 0 and len(LatencyCache(tmp_path / "latency.sqlite")) >= 1
    # a study keeps its budgets: resumed under others it would judge its trials by two rules
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for other in (dict(latency_budget_ms=900.0), dict(macs_budget=budget * 2), dict(macs_budget=None),
                  dict(latency_stat="p90")):
        with pytest.raises(PoseNASError, match=r"was searched under latency budget 1000.0 ms \(total, 10 people\)"):
            run_search(replace(cfg, trials=6, **other), meter(tmp_path), progress=False)
    with pytest.raises(PoseNASError, match="was searched under"):
        run_search(cfg, LatencyMeter(LocalBackend(replace(FAST, latency_of="network"))), progress=False)
    with held_elsewhere(out) as pid:  # another search writes this folder
        with pytest.raises(PoseNASError, match=f"search: in use by pid {pid}"):
            run_search(replace(cfg, trials=6), meter(tmp_path), progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_search_may_budget_the_p90_run(tmp_path, tiny_supernet, synth_small):
    """Every trial is judged by its measured p90 (and keeps its median beside it); the budget
    names what it bounds."""
    run_search(config(tmp_path, tiny_supernet, synth_small, latency_stat="p90", trials=2), meter(tmp_path),
               progress=False)
    table = pd.read_csv(tmp_path / "search" / "trials.csv")
    assert (table["latency_ms"] == table["latency_p90_ms"]).all()
    assert (table["latency_p90_ms"] >= table["latency_median_ms"]).all()
    assert json.loads((tmp_path / "search" / "pareto.json").read_text())["latency_stat"] == "p90"
    with pytest.raises(PoseNASError, match="latency_stat 'p95' unknown; use one of"):
        config(tmp_path, tiny_supernet, synth_small, latency_stat="p95")


@pytest.mark.slow  # two more searches
@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_other_samplers(tmp_path, tiny_supernet, synth_small, sampler):
    summary = run_search(config(tmp_path, tiny_supernet, synth_small, sampler=sampler, trials=3), meter(tmp_path),
                         progress=False)
    assert summary["trials"] == 3 and summary["feasible"] == 3


def test_budgets_no_subnet_meets_fail_before_searching(tmp_path, tiny_supernet, synth_small):
    with pytest.raises(PoseNASError, match=r"MACs budget 1000 is below the smallest subnet of space 'tiny'"):
        run_search(config(tmp_path, tiny_supernet, synth_small, macs_budget=1000), meter(tmp_path), progress=False)
    with pytest.raises(PoseNASError, match=r"latency budget 0.0001 ms is below the smallest subnet"):
        run_search(config(tmp_path, tiny_supernet, synth_small, latency_budget_ms=0.0001), meter(tmp_path),
                   progress=False)
    network_model = tmp_path / "network.json"
    LatencyPredictor([0.01] * len(NAMES), {}, asdict(replace(FAST, latency_of="network"))).save(network_model)
    with pytest.raises(PoseNASError, match="predicts network latency, but the search measures total, 10 people"):
        run_search(config(tmp_path, tiny_supernet, synth_small, predictor=str(network_model)), meter(tmp_path),
                   progress=False)
    assert not (tmp_path / "search" / "study.db").exists(), "no study was created"


@pytest.mark.slow  # a third search; the dashboard reading its storage
def test_search_cli_and_dashboard_opens_the_study(tmp_path, tiny_supernet, synth_small, capsys):
    out = tmp_path / "cli"
    assert main(["search", "--supernet", str(tiny_supernet), "--data", str(synth_small), "--latency-budget", "500",
                 "--trials", "2", "--eval-images", "4", "--calib-images", "4", "--out", str(out), "--repeats", "5",
                 "--warmup", "1", "--cache", str(tmp_path / "c.sqlite")]) == 0
    assert "2 trials, 2 feasible" in capsys.readouterr().out
    from optuna_dashboard import wsgi

    app = wsgi(f"sqlite:///{out / 'study.db'}")
    status = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/api/studies", "QUERY_STRING": "",
                         "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                         "wsgi.input": None, "wsgi.errors": sys.stderr},
                        lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200")
    studies = json.loads(body)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["posenas"]


def test_pareto_front_and_hypervolume():
    table = pd.DataFrame({"AP": [0.2, 0.5, 0.4, 0.6, 0.9], "latency_ms": [1.0, 2.0, 3.0, 4.0, 1.5],
                          "feasible": [True, True, True, True, False], "evaluated": [True] * 5})
    front = pareto_front(table)
    assert front["latency_ms"].tolist() == [1.0, 2.0, 4.0]
    assert hypervolume(front, 5.0) == pytest.approx(1 * 0.2 + 2 * 0.5 + 1 * 0.6)
