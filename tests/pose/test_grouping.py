import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from nas.pose.dataset import CocoPoseDataset
from nas.pose.decode import Candidates, DecodeConfig, divide_heatmaps, nms_radius
from nas.pose.grouping import assign, drop_equal_peaks, match, refine, subpixel
from nas.pose.targets import oracle_outputs
from nas.pose.transforms import letterbox_matrix, warp_keypoints
from tests.conftest import COCO_MINI
from tests.pose import reference_grouping


def test_assignment_is_scipys_ties_included():
    rng = np.random.default_rng(0)
    for trial in range(400):
        rows = int(rng.integers(1, 10))
        cost = (rng.integers(0, 3, (rows, int(rng.integers(rows, 13)))).astype(float) if trial % 2
                else rng.random((rows, int(rng.integers(rows, 13)))))  # small integers: ties everywhere
        cost[:, rng.integers(0, cost.shape[1]):] += 1e10 * (trial % 3 == 0)  # the padding columns of grouping
        assert np.array_equal(assign(cost), linear_sum_assignment(cost)[1]), cost


@pytest.mark.parametrize("size", [256, 512])
def test_compiled_grouping_finds_the_reference_people_on_coco_mini(size):
    """Oracle outputs of real coco-mini crowds (20 images), blurred with noise so that tags collide and scores
    tie: the compiled grouping returns exactly the people of the NumPy/SciPy reference; the
    compiled refinement fills in the joints the reference fills in (those detected too weakly)."""
    ds = CocoPoseDataset(COCO_MINI / "annotations" / "person_keypoints_val.json", COCO_MINI / "images")
    rng, cfg, people_seen, filled = np.random.default_rng(size), DecodeConfig(), 0, 0
    order = np.asarray(ds.spec.group_order)
    for image_id in ds.image_ids[:20]:
        info = ds.coco.imgs[image_id]
        keypoints = warp_keypoints(ds.people(image_id)[0], letterbox_matrix(info["width"], info["height"], size), size)
        outputs = oracle_outputs(keypoints, size, 17, (4, 2))
        outputs[0][:, 17:] += torch.from_numpy(rng.normal(0, 0.5, outputs[0][:, 17:].shape).astype(np.float32))
        outputs[-1][:, :17] += torch.from_numpy(rng.uniform(0, 0.5, outputs[-1][:, :17].shape).astype(np.float32))
        with torch.no_grad():
            heat, tag_maps, joints, tags = Candidates(17, 2)(*divide_heatmaps(outputs, 17))
        heat, tag_maps = heat[0], tag_maps[0, ..., None]
        joints, tags = joints[0].numpy(), tags[0, ..., None].numpy()
        radius = nms_radius(cfg, 2)
        assert np.array_equal(drop_equal_peaks(joints, radius), reference_grouping.equal_peaks(joints, radius))
        for threshold in (0.4, 0.8):
            c = DecodeConfig(detection_threshold=threshold)
            compiled = match(drop_equal_peaks(joints, radius), tags, order, c.detection_threshold, c.tag_threshold,
                             c.max_people, c.use_detection_val)
            reference = reference_grouping.match(reference_grouping.equal_peaks(joints, radius), tags, ds.spec, c)
            assert np.array_equal(compiled, reference), image_id
            refined = refine(heat.numpy(), tag_maps.numpy(), compiled)
            expected = reference_grouping.refine(heat, tag_maps, reference)
            assert np.array_equal(refined[..., :3], expected[..., :3]), image_id
            x, y = reference_grouping.subpixel(heat.numpy(), np.arange(17)[None], expected[..., 0], expected[..., 1])
            assert np.allclose(subpixel(heat.numpy(), refined)[..., :2], np.stack([x, y], -1), atol=1e-5)
            filled += int((compiled[..., 2] <= 0).sum())
            people_seen += len(compiled)
    assert people_seen > 60 and filled > 60


def test_equal_neighbouring_peaks_count_once():
    joints = np.zeros((1, 4, 3), np.float32)
    joints[0, :, :] = [[5, 5, 0.9], [6, 5, 0.9], [20, 20, 0.9], [5, 6, 0.5]]
    out = drop_equal_peaks(joints, 1)
    assert out[0, :, 2].tolist() == pytest.approx([0.9, 0.0, 0.9, 0.5])


@pytest.mark.parametrize("fine, coarse, dims", [((37, 45), (19, 23), 1), ((100, 60), (50, 30), 2),
                                                ((16, 16), (16, 16), 2)])
def test_refinement_is_the_references_on_maps_of_any_size(fine, coarse, dims):
    """Maps whose sides are no multiple of the search's blocks, tags with a flip dimension, and heat
    in quarters so that scores tie: the block search returns the full search's first maximum."""
    rng = np.random.default_rng(dims)
    for _ in range(20):
        heat = (rng.integers(0, 5, (3, *fine)) / 4).astype(np.float32)
        tags = rng.normal(0, 2, (3, *coarse, dims)).astype(np.float32)
        people = np.zeros((4, 3, 3 + dims), np.float32)
        people[..., 2] = rng.random((4, 3)) < 0.5
        people[..., 3:] = rng.normal(0, 2, (4, 3, dims))
        expected = reference_grouping.refine(torch.from_numpy(heat), torch.from_numpy(tags), people)
        assert np.array_equal(refine(heat, tags, people), expected)
