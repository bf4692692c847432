import json

import numpy as np
import pytest

from nas.app.cli import main
from nas.pose.dataset import load_annotations
from nas.pose.evaluate import evaluate
from tests.conftest import FIXTURES


def _gt_as_results(gt, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for a in gt.dataset["annotations"]:
        if a["num_keypoints"] > 0 and not a["iscrowd"]:
            kp = np.array(a["keypoints"], np.float64).reshape(-1, 3)
            kp[:, :2] += rng.normal(0, jitter, (len(kp), 2))
            out.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 1.0})
    return out


def test_ground_truth_as_predictions_scores_ap_one_on_the_coco_fixture():
    path = FIXTURES / "coco" / "test_coco.json"
    gt, spec, _ = load_annotations(path)
    raw = json.loads(path.read_text())["annotations"]
    assert len(_gt_as_results(gt)) == sum(1 for a in raw if a["num_keypoints"] > 0) >= 10
    m = evaluate(gt, _gt_as_results(gt), spec)
    assert m["AP"] == pytest.approx(1.0) and m["AR"] == pytest.approx(1.0)
    noisy = evaluate(gt, _gt_as_results(gt, jitter=8.0), spec)
    assert noisy["AP"] < 0.95, "OKS punishes displaced keypoints"
    assert evaluate(gt, [], spec)["AP"] == 0.0


def test_crowdpose_reports_easy_medium_hard_by_crowd_index():
    gt, spec, _ = load_annotations(FIXTURES / "crowdpose" / "test_crowdpose.json")
    m = evaluate(gt, _gt_as_results(gt), spec)
    assert {"AP_easy", "AP_medium", "AP_hard"} <= m.keys()
    assert m["AP_medium"] == pytest.approx(1.0)  # both fixture images have crowdIndex in [0.1, 0.8)
    assert np.isnan(m["AP_easy"]) and np.isnan(m["AP_hard"]), "no image at those levels: undefined"


def test_eval_cli_prints_json_last(tmp_path, capsys):
    gt_path = FIXTURES / "coco" / "test_coco.json"
    gt, _, _ = load_annotations(gt_path)
    res = tmp_path / "res.json"
    res.write_text(json.dumps(_gt_as_results(gt)))
    assert main(["eval", "--ann", str(gt_path), "--results", str(res), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"AP", "AP50", "AP75", "APM", "APL", "AR"} and last["AP"] == pytest.approx(1.0)


def test_results_of_another_dataset_are_refused(tmp_path, capsys):
    gt_path = FIXTURES / "coco" / "test_coco.json"
    gt, _, _ = load_annotations(gt_path)
    res = tmp_path / "crowdpose_res.json"
    bad = _gt_as_results(gt)
    for r in bad:
        r["keypoints"] = r["keypoints"][:42]
    res.write_text(json.dumps(bad))
    assert main(["eval", "--ann", str(gt_path), "--results", str(res)]) == 2
    err = capsys.readouterr().err
    assert "result #0 has 42 keypoint values, expected 51" in err
    res.write_text(json.dumps([{**_gt_as_results(gt)[0], "image_id": 999}]))
    assert main(["eval", "--ann", str(gt_path), "--results", str(res)]) == 2
    assert "image_id 999 that is not in the ground truth" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"keypoints": [float("nan")] * 51, "score": float("nan")}, "non-numeric, NaN or infinite"),
    ({"score": float("inf")}, "non-numeric, NaN or infinite"),
    ({"score": "0.9"}, "non-numeric, NaN or infinite"),
    ({"score": True}, "non-numeric, NaN or infinite"),
    ({"image_id": [1]}, "image_id [1] that is not in the ground truth"),
    ({"category_id": 5}, "category_id 5; the people are category 1"),
])
def test_results_cocoeval_would_misjudge_are_refused(tmp_path, capsys, change, message):
    gt_path = FIXTURES / "coco" / "test_coco.json"
    gt, _, _ = load_annotations(gt_path)
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{**r, **change} for r in _gt_as_results(gt)]))  # all-NaN once scored AP 1.0
    assert main(["eval", "--ann", str(gt_path), "--results", str(res)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "result #0" in err and message in err
