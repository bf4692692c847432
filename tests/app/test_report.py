"""The run's plot and summary table: a search across heads shows which head each Pareto point and winner uses."""
import json

import pandas as pd

from nas.app.report import plot_run, summary_table
from nas.app.runs import RunLayout
from nas.search.results import pareto_front
from search_spaces import SearchSpace


def test_a_search_across_heads_marks_each_pareto_point_with_its_head(tmp_path):
    space = SearchSpace.load("tiny")
    ae, query = space.resolve("min"), space.with_head(space.resolve("max"), "query")
    trials = pd.DataFrame([{"number": i, "AP": ap, "latency_ms": ms, "macs": 10 ** 6 * (i + 1), "params": 1000,
                            "feasible": True, "evaluated": True, "arch_hash": str(i), "arch": json.dumps(arch)}
                           for i, (arch, ap, ms) in enumerate([(ae, 0.1, 1.0), (query, 0.3, 2.0), (ae, 0.2, 3.0)])])
    run = RunLayout(tmp_path)
    run.search.mkdir()
    trials.to_csv(run.search / "trials.csv", index=False)
    front = pareto_front(trials)
    run.pareto.write_text(json.dumps({"latency_budget_ms": 5.0, "latency_of": "total", "pareto": [
        {**r, "arch": json.loads(r["arch"])} for r in front[["number", "AP", "latency_ms", "macs", "params",
                                                              "arch_hash", "arch"]].to_dict("records")]}))
    winner = run.winner(1, "1")  # the query-head point, finetuned and exported
    (winner / "export").mkdir(parents=True)
    (winner / "finetune.json").write_text(json.dumps({"arch": query, "before": {"AP": 0.3}, "after": {"AP": 0.35}}))
    (winner / "export" / "card.json").write_text(json.dumps({"macs": 2e6, "latency": {"median_ms": 2.0}}))
    plot_run(tmp_path)
    svg = (tmp_path / "pareto.svg").read_text()
    assert "Pareto set, ae head" in svg and "Pareto set, query head" in svg
    pareto = summary_table(run).query("kind == 'pareto'")
    assert list(pareto["head"]) == ["ae", "query"] and list(pareto["name"]) == ["trial 0", "trial 1"]
    assert list(summary_table(run).query("kind == 'winner'")["head"]) == ["query"]
