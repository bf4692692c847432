import numpy as np
import torch

from nas.pose.datacheck import oracle_ap
from nas.pose.dataset import CocoPoseDataset
from nas.pose.decode import DecodeConfig, aggregate, group
from nas.pose.keypoints import COCO
from nas.pose.targets import oracle_outputs
from tests.conftest import COCO_MINI, FIXTURES


def _two_people():
    kp = np.zeros((2, 17, 3), np.float32)
    rng = np.random.default_rng(0)
    kp[0, :, :2] = rng.uniform(10, 50, (17, 2))
    kp[1, :, :2] = rng.uniform(70, 120, (17, 2))
    kp[..., 2] = 2
    return kp


def test_grouping_recovers_each_person_by_tag_with_subpixel_accuracy():
    kp = _two_people()
    outs = oracle_outputs(kp, 128, 17, (4, 2))
    heat, tags = aggregate(outs, 17)
    people, scores = group(heat[0], tags[0], COCO, stride=2)
    assert len(people) == 2 and (scores > 0.9).all()
    for truth in kp:
        found = min(people, key=lambda p: np.abs(((p[:, :2] + 0.5) * 2 - 0.5) - truth[:, :2]).mean())
        err = np.abs(((found[:, :2] + 0.5) * 2 - 0.5) - truth[:, :2])
        assert err.max() < 0.5, "log-parabola refinement recovers Gaussian peaks below a pixel"


def test_grouping_follows_tags_not_proximity():
    kp = _two_people()
    outs = oracle_outputs(kp, 128, 17, (4,))
    wrist = COCO.keypoints.index("left_wrist")
    tag = outs[0][0, 17 + wrist]
    swapped = tag.clone()
    swapped[tag == 1], swapped[tag == 2] = 2.0, 1.0  # the two wrists trade tags
    outs[0][0, 17 + wrist] = swapped
    heat, tags = aggregate(outs, 17)
    people, _ = group(heat[0], tags[0], COCO, stride=4, cfg=DecodeConfig(refine=False))
    to_input = lambda p: (p[:, :2] + 0.5) * 4 - 0.5  # noqa: E731
    first = min(people, key=lambda p: np.abs(to_input(p)[0] - kp[0, 0, :2]).sum())
    assert np.abs(to_input(first)[wrist] - kp[1, wrist, :2]).max() < 1.0, "took the other person's wrist"


def test_flip_test_aggregation_undoes_the_mirror():
    kp = _two_people()
    outs = oracle_outputs(kp, 128, 17, (4, 2))
    mirrored = oracle_outputs(kp, 128, 17, (4, 2))
    flipped = [torch.flip(o, dims=[3]) for o in mirrored]
    for o in flipped:  # what a network sees on the mirrored image: left and right swap
        o[:, :17] = o[:, COCO.flip_index]
        if o.shape[1] > 17:
            o[:, 17:] = o[:, 17:][:, COCO.flip_index]
    heat, tags = aggregate(outs, 17, flipped, COCO.flip_index)
    plain, _ = aggregate(outs, 17)
    assert torch.allclose(heat, plain, atol=1e-5) and tags.shape[-1] == 2


def test_oracle_round_trip_on_fixture_and_coco_mini():
    fixture = CocoPoseDataset(FIXTURES / "coco" / "test_coco.json", FIXTURES / "coco")
    assert oracle_ap(fixture, 256)["AP"] >= 0.9
    ds = CocoPoseDataset(COCO_MINI / "annotations" / "person_keypoints_val.json", COCO_MINI / "images")
    assert oracle_ap(ds, 512)["AP"] >= 0.9


def test_oracle_on_synthetic_set(synth_small):
    ds = CocoPoseDataset(synth_small / "annotations.json", synth_small / "images")
    metrics = oracle_ap(ds, 256)
    assert metrics["AP"] >= 0.9
    low = oracle_ap(ds, 64)["AP"]
    assert low < metrics["AP"], "a coarser heatmap lowers the ceiling: resolution matters"
