import json

import numpy as np
import pytest

from nas.app.cli import main
from nas.errors import PoseNASError
from nas.pose.dataset import CocoPoseDataset
from tests.conftest import COCO_MINI, FIXTURES


@pytest.mark.parametrize("folder,ann,spec,k", [
    ("coco", "test_coco.json", None, 17), ("crowdpose", "test_crowdpose.json", None, 14),
    ("aic", "test_aic.json", None, 14), ("ochuman", "test_ochuman.json", "ochuman", 17)])
def test_every_loader_reads_its_fixture(folder, ann, spec, k):
    ds = CocoPoseDataset(FIXTURES / folder / ann, FIXTURES / folder, spec)
    assert ds.spec.num_keypoints == k
    total = 0
    for i in range(len(ds)):
        s = ds[i]
        h, w = s.image.shape[:2]
        assert (h, w) == (ds.coco.imgs[s.image_id]["height"], ds.coco.imgs[s.image_id]["width"])
        assert s.keypoints.shape[1:] == (k, 3) and s.ignore.shape == (h, w)
        labeled = s.keypoints[s.keypoints[..., 2] > 0]
        assert (labeled[:, 0] >= 0).all() and (labeled[:, 0] < w).all()
        total += len(s.keypoints)
    assert total > 0
    # pycocotools' eval needs these; formats without them (AIC, CrowdPose) get them filled in
    assert all({"area", "iscrowd", "num_keypoints"} <= a.keys() for a in ds.coco.dataset["annotations"])


def test_crowds_and_unlabeled_people_become_ignore_masks_on_real_coco():
    ds = CocoPoseDataset(COCO_MINI / "annotations" / "person_keypoints_val.json", COCO_MINI / "images")
    ignored_ids = {a["image_id"] for a in ds.coco.dataset["annotations"] if a["iscrowd"] or a["num_keypoints"] == 0}
    labeled_ids = {a["id"] for a in ds.coco.dataset["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0}
    image_id = sorted(ignored_ids)[0]
    s = ds[ds.image_ids.index(image_id)]
    assert s.ignore.sum() > 0
    # the people kept as positives are exactly the labeled non-crowd ones
    anns = ds.annotations(image_id)
    assert len(s.keypoints) == sum(a["id"] in labeled_ids for a in anns)
    clean = [i for i in ds.image_ids if i not in ignored_ids][0]
    assert ds[ds.image_ids.index(clean)].ignore.sum() == 0


# --- bad input: one clear line naming the file and the entry, and a non-zero exit -----------------

def _coco(tmp_path, mutate=None, image=True):
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 0,
                             "keypoints": [5, 5, 2] * 17, "num_keypoints": 17, "area": 100.0}],
            "categories": [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)]}]}
    if mutate:
        mutate(data)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    if image:
        import cv2
        cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    return path


def _check(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("posenas: error: ")
    return err


def test_missing_json(tmp_path, capsys):
    err = _check(["data", "check", "--ann", str(tmp_path / "nope.json"), "--spec", "coco"], capsys)
    assert "annotation file not found" in err and "nope.json" in err


def test_malformed_json(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2,,]}')
    err = _check(["data", "check", "--ann", str(bad)], capsys)
    assert "bad.json" in err and "malformed JSON at line 1 column" in err


def test_keypoints_array_of_wrong_length(tmp_path, capsys):
    path = _coco(tmp_path, lambda d: d["annotations"][0].update(keypoints=[1, 2, 2] * 16 + [1, 2]))
    err = _check(["data", "check", "--ann", str(path), "--spec", "coco"], capsys)
    assert "gt.json" in err and "annotation id 7" in err and "has 50 values, expected 51" in err


def _ann(d):
    return d["annotations"][0]


GROUND_TRUTH_FLAWS = [  # (what is done to a valid file, what the one line must say)
    (lambda d: d["images"][0].update(id="1"), "image entry #0: id '1' is not an integer, or not unique"),
    (lambda d: d["images"].append(dict(d["images"][0])), "image entry #1: id 1 is not an integer, or not unique"),
    (lambda d: d["images"][0].update(width=0), "'width' must be a positive integer, got 0"),
    (lambda d: d["images"][0].pop("height"), "'height' must be a positive integer, got None"),
    (lambda d: d["annotations"].append(dict(_ann(d))), "annotation id 7 (image 1): 'id' must be an integer unique"),
    (lambda d: _ann(d).pop("id"), "annotation id '#0' (image 1): 'id' must be an integer"),
    (lambda d: _ann(d).update(image_id=[1]), "image_id is not in 'images'"),
    (lambda d: _ann(d)["keypoints"].__setitem__(0, float("nan")), "'keypoints' holds non-numeric or non-finite"),
    (lambda d: _ann(d)["keypoints"].__setitem__(3, "5"), "'keypoints' holds non-numeric or non-finite"),
    (lambda d: _ann(d)["keypoints"].__setitem__(2, 3), "visibility flags must be 0, 1 or 2, got [3]"),
    (lambda d: _ann(d).update(num_keypoints=0), "num_keypoints 0 but 17 keypoints are labelled"),
    (lambda d: _ann(d).update(num_keypoints=-1), "num_keypoints -1"),
    (lambda d: _ann(d).update(iscrowd=2), "iscrowd must be 0 or 1, got 2"),
    (lambda d: _ann(d).update(bbox=[1, 1, -10, 10]), "'bbox' must be [x, y, w, h] of finite numbers with w, h >= 0"),
    (lambda d: _ann(d).update(bbox=[1, 1, "10", 10]), "'bbox' must be [x, y, w, h]"),
    (lambda d: _ann(d).update(area=0), "'area' 0 must be a finite number, positive for a labelled person"),
    (lambda d: _ann(d).update(area="big"), "'area' 'big' must be a finite number"),
    (lambda d: _ann(d).update(segmentation=[[1, 2, 3]]), "'segmentation' must be polygons"),
    (lambda d: d["categories"][0].pop("id"), "the keypoint category needs an integer 'id'"),
]


@pytest.mark.parametrize("flaw, message", GROUND_TRUTH_FLAWS)
def test_every_ground_truth_field_cocoeval_relies_on_is_checked(tmp_path, capsys, flaw, message):
    path = _coco(tmp_path, flaw)
    err = _check(["data", "check", "--ann", str(path), "--spec", "coco"], capsys)
    assert "gt.json" in err and message in err


def test_eval_and_training_check_ground_truth_as_data_check_does(tmp_path, capsys):
    path = _coco(tmp_path, lambda d: _ann(d).update(area=0))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "keypoints": [5, 5, 1] * 17, "score": 1.0}]))
    for command in (["eval", "--ann", str(path), "--results", str(results), "--spec", "coco"],
                    ["train", "--ann", str(path), "--images", str(tmp_path), "--spec", "coco", "--space", "tiny",
                     "--epochs", "1", "--out", str(tmp_path / "run")]):
        assert "'area' 0 must be a finite number" in _check(command, capsys)
    assert not (tmp_path / "run").exists()


def test_category_keypoint_count_disagrees_with_spec(tmp_path, capsys):
    path = _coco(tmp_path)
    err = _check(["data", "check", "--ann", str(path), "--spec", "crowdpose"], capsys)
    assert "category 1 ('person') has 17 keypoints but spec 'crowdpose' expects 14" in err


def test_missing_image(tmp_path, capsys):
    path = _coco(tmp_path, image=False)
    err = _check(["data", "check", "--ann", str(path), "--spec", "coco"], capsys)
    assert "a.jpg: image file not found (image id 1" in err


def test_unreadable_image(tmp_path, capsys):
    path = _coco(tmp_path, image=False)
    (tmp_path / "a.jpg").write_bytes(b"this is not a jpeg")
    err = _check(["data", "check", "--ann", str(path), "--spec", "coco"], capsys)
    assert "a.jpg: not a readable image (image id 1" in err


def test_dataset_without_annotated_person(tmp_path, capsys):
    path = _coco(tmp_path, lambda d: d["annotations"][0].update(keypoints=[0] * 51, num_keypoints=0))
    err = _check(["data", "check", "--ann", str(path), "--spec", "coco"], capsys)
    assert "gt.json: no annotated person" in err


def test_unknown_names_without_spec_ask_for_one(tmp_path):
    with pytest.raises(PoseNASError, match="match no known spec; pass --spec"):
        CocoPoseDataset(_coco(tmp_path))
