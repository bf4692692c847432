"""A search over several targets: one front over the targets' searches, each point on its own target."""
import json

import pandas as pd
import pytest

from nas.errors import PoseNASError
from nas.search.results import pareto_winners
from nas.search.targets import merge_searches, target_folder

FP32, INT8 = "onnxruntime/fp32/1", "onnxruntime/int8/1"


def _search(out, target, points):
    folder = target_folder(out, target)
    folder.mkdir(parents=True)
    pareto = [{"number": i, "AP": ap, "latency_ms": ms, "macs": 1, "params": 1, "arch_hash": name, "arch": {"n": name}}
              for i, (name, ap, ms) in enumerate(points)]
    (folder / "pareto.json").write_text(json.dumps({"latency_of": "total, 10 people", "latency_budget_ms": 6.0,
                                                    "macs_budget": None, "pareto": pareto}))
    pd.DataFrame({"arch_hash": [p[0] for p in points], "AP": [p[1] for p in points]}).to_csv(folder / "trials.csv")


def test_the_front_over_targets_keeps_each_point_on_the_target_it_was_found_for(tmp_path):
    _search(tmp_path, FP32, [("a", 0.30, 2.0), ("b", 0.40, 5.0)])
    _search(tmp_path, INT8, [("a", 0.29, 2.5), ("c", 0.42, 4.0)])  # int8: c is faster and better than b
    merged = merge_searches([FP32, INT8], tmp_path)
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert [(p["arch_hash"], p["target"]) for p in pareto["pareto"]] == [("a", FP32), ("c", INT8)]
    assert pareto["targets"] == [FP32, INT8] and pareto["latency_budget_ms"] == 6.0
    assert merged["picked"] == {FP32: 1, INT8: 1} and merged["best_ap"] == 0.42
    assert merged["hypervolume"] == pytest.approx(2.0 * 0.30 + 2.0 * 0.42)
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["target"]) == [FP32, FP32, INT8, INT8]  # every row says where it was measured
    assert [(p["arch"], p["target"]) for p in pareto_winners(tmp_path / "pareto.json", 1)] == [({"n": "c"}, INT8)]


def test_a_target_whose_search_is_missing_is_one_line(tmp_path):
    _search(tmp_path, FP32, [("a", 0.30, 2.0)])
    with pytest.raises(PoseNASError, match="onnxruntime-int8-1/pareto.json"):
        merge_searches([FP32, INT8], tmp_path)
