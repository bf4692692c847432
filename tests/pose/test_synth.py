import hashlib
import json

import numpy as np

from nas.pose.dataset import CocoPoseDataset
from nas.pose.keypoints import COCO
from nas.pose.synth import MIN_LABELED_AREA, J, draw_person, generate, render_scene, sample_person


def _digest(folder):
    h = hashlib.sha256((folder / "annotations.json").read_bytes())
    for p in sorted((folder / "images").iterdir()):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, synth_small):
    again = generate(tmp_path / "again", 24, seed=3, size=(160, 160), progress=False).parent
    other = generate(tmp_path / "other", 24, seed=4, size=(160, 160), progress=False).parent
    assert _digest(again) == _digest(synth_small)
    assert _digest(other) != _digest(synth_small)


def test_output_is_valid_coco_keypoints(synth_small):
    ds = CocoPoseDataset(synth_small / "annotations.json", synth_small / "images")
    assert ds.spec is COCO or ds.spec.name == "coco"
    data = json.loads((synth_small / "annotations.json").read_text())
    for a in data["annotations"]:
        assert {"area", "bbox", "iscrowd", "keypoints", "num_keypoints", "segmentation"} <= a.keys()
        kps = np.array(a["keypoints"]).reshape(17, 3)
        assert a["num_keypoints"] == int((kps[:, 2] > 0).sum())
        labeled = kps[kps[:, 2] > 0]
        assert ((labeled[:, :2] >= 0) & (labeled[:, :2] < 160)).all(), "labeled joints lie inside the frame"
        assert (kps[kps[:, 2] == 0] == 0).all(), "unlabeled joints are zero, as COCO writes them"


def test_people_too_small_to_label_are_unlabeled_as_in_coco(synth_small):
    data = json.loads((synth_small / "annotations.json").read_text())
    people = [a for a in data["annotations"] if not a["iscrowd"]]
    assert all((a["num_keypoints"] > 0) == (a["area"] >= MIN_LABELED_AREA) for a in people)
    assert any(a["num_keypoints"] == 0 for a in people) and any(a["num_keypoints"] > 0 for a in people)
    assert all(not any(a["keypoints"]) for a in people if a["num_keypoints"] == 0)


def test_scenes_cover_the_promised_variety():
    rng_scenes = [render_scene(np.random.default_rng((0, i)), 256, 256)[1] for i in range(60)]
    counts = [sum(1 for a in anns if not a["iscrowd"]) for anns in rng_scenes]
    assert min(counts) >= 1 and max(counts) >= 8
    people = [a for anns in rng_scenes for a in anns if not a["iscrowd"]]
    heights = np.array([a["bbox"][3] for a in people])
    assert heights.min() < 0.15 * 256 and heights.max() > 0.7 * 256, "small and large people"
    vis = np.concatenate([np.array(a["keypoints"]).reshape(17, 3)[:, 2] for a in people])
    assert (vis == 1).mean() > 0.03, "occluded joints are labeled but not visible"
    assert any(a["num_keypoints"] < 17 for a in people), "truncated people"
    assert any(a["iscrowd"] for anns in rng_scenes for a in anns), "crowd regions"


def test_left_limbs_carry_a_light_stripe_right_limbs_do_not():
    rng = np.random.default_rng(5)
    light = {"left": 0, "right": 0}
    for _ in range(20):
        p = sample_person(rng, np.array([200.0, 260.0]), 300.0)
        img = np.zeros((480, 400, 3), np.uint8)
        draw_person(img, p)
        for side in light:
            mid = (p.joints[J[f"{side}_hip"]] + p.joints[J[f"{side}_knee"]]) / 2
            light[side] += int(img[int(round(mid[1])), int(round(mid[0]))].min() > 200)
    assert light["left"] == 20 and light["right"] <= 3  # a right thigh may lie under a left arm
