"""The benchmark suite's machinery: figures beside targets in bench.json and bench.md."""
import json
from pathlib import Path

import pytest

from nas.app.cli import main


@pytest.mark.slow
def test_bench_writes_figures_beside_their_targets(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--only", "cost", "decode", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["quick"] is True and [f["unit"] for f in report["figures"]] == ["configs/s"] + ["share"] * 4
    cost, *decode = report["figures"]
    assert cost["value"] > 0 and cost["ok"] == (cost["value"] >= 1000) and cost["target"] == ">= 1000"
    assert [d["name"].split(" people")[0][-2:].strip() for d in decode] == ["1", "5", "10", "20"]
    assert decode[2]["ok"] == (decode[2]["value"] <= 0.25) and decode[0]["ok"] is None  # 10 people judged
    table = (out / "bench.md").read_text().splitlines()
    assert [c.strip() for c in table[0].split("|")[1:6]] == ["name", "value", "unit", "target", "met"]
    assert len(table) == 7  # header, rule, five figures


def test_full_scale_figures_judged_on_numpy_values_are_json():
    import numpy as np

    from nas.app.bench import FULL, figure

    row = figure("tau", np.float64(0.57), "tau", ">= 0.7", np.float64(0.57) >= 0.7, FULL)
    assert row["ok"] is False and json.loads(json.dumps(row))["value"] == 0.57


def test_target_ratios_are_read_from_the_recorded_table():
    import pandas as pd

    from nas.app.bench_targets import described, ratios

    rows = [{"network": net, "runtime": runtime, "precision": precision, "threads": threads,
             "total_ms": ms * (2 if threads == 1 else 1)}
            for net, times in {"hrnet": (200.0, 66.0, 100.0, 59.0), "litepose": (8.0, 9.0, 6.0, 6.0)}.items()
            for (runtime, precision), ms in zip([("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                                                 ("openvino", "fp32"), ("openvino", "int8")], times)
            for threads in (1, 2)]
    one = ratios(pd.DataFrame(rows), 1)
    assert one.loc["hrnet"].tolist() == pytest.approx([400.0, 0.33, 0.5, 0.59])
    assert one.loc["litepose"].onnxruntime_int8_over_fp32 == pytest.approx(9 / 8)
    assert ratios(pd.DataFrame(rows), 2).loc["hrnet"].onnxruntime_fp32_ms == 200.0
    assert "onnxruntime int8 / fp32 0.33x, OpenVINO fp32 / onnxruntime fp32 0.50x" in described(one.loc["hrnet"])


def test_each_targets_best_is_read_against_the_other_fronts_from_the_recorded_table():
    import pandas as pd

    from nas.app.bench_targets import best_on

    table = pd.read_csv(Path(__file__).parents[2] / "results" / "reference" / "target-fronts" / "target-fronts.csv")
    own, other = best_on(table, "onnxruntime/fp32/1", own=True), best_on(table, "onnxruntime/fp32/1", own=False)
    assert own.front == own.on == "onnxruntime/fp32/1" and other.front != "onnxruntime/fp32/1"
    assert own.AP == pytest.approx(0.4693, abs=1e-4) and other.AP == pytest.approx(0.4494, abs=1e-4)
    assert own.latency_ms <= 6 and other.latency_ms <= 6  # an AP is counted only within the budget there
    own = best_on(table, "onnxruntime/int8/1", own=True)  # the int8 search missed a subnet another front found
    assert own.AP < best_on(table, "onnxruntime/int8/1", own=False).AP
