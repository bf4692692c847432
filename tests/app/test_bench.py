"""The benchmark suite's machinery: figures beside targets in bench.json and bench.md."""
import json

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
