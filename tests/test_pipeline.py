import json

import pytest
import yaml

from nas.cli import main
from tests.test_train import TINY


def _config(tmp_path, **train):
    cfg = {"name": "t", "data": {"train_images": 16, "val_images": 8, "size": [96, 96]},
           "train": {"epochs": 1, "batch_size": 8, "workers": 0, "val_every": 1, **TINY, **train}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_writes_one_folder_and_resumes_each_stage(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path)), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AR"}
    assert (out / "train" / "checkpoint.pt").exists() and (out / "train" / "curves.png").exists()
    stamp = (out / "data" / "train" / "annotations.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["run", str(_config(tmp_path, epochs=2)), "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out
    assert (out / "data" / "train" / "annotations.json").stat().st_mtime_ns == stamp, "data not regenerated"


@pytest.mark.parametrize("text,message", [
    ("data: [1, 2", "malformed YAML"),
    ("data: {}\n", "needs mappings 'data' and 'train'"),
    ("data: {}\ntrain: {epochs: 1, colour: red}\n", "unknown setting(s) ['colour']"),
    ("data: {}\ntrain: {epochs: ten}\n", "setting 'epochs' must be int, got 'ten'"),
    ("data: {images: 3}\ntrain: {}\n", "unknown data setting(s) ['images']"),
])
def test_bad_run_configs_fail_with_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
