import json

from nas.app.cli import main
from tests.conftest import COCO_MINI


def test_data_check_summarizes_and_reports_the_oracle_on_coco_mini(capsys):
    ann = COCO_MINI / "annotations" / "person_keypoints_val.json"
    code = main(["data", "check", "--ann", str(ann), "--images", str(COCO_MINI / "images"),
                 "--oracle", "--resolution", "512", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["images"] == 52 and out["people"] == 124 and out["crowd_regions"] == 5
    assert sum(out["scale_histogram"].values()) == out["people"]
    assert out["oracle"]["resolution"] == 512 and out["oracle"]["AP"] >= 0.9


def test_data_check_on_synthetic(synth_small, capsys):
    assert main(["data", "check", "--ann", str(synth_small / "annotations.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["images"] == 24 and out["people"] > 24 and out["keypoints_visible"] < out["keypoints_labeled"]
