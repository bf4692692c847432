import numpy as np
import torch

from nas.pose.dataset import CocoPoseDataset
from nas.pose.samples import MAX_PEOPLE, PoseTrainSet, ResolutionBatchSampler, TeacherPairs
from nas.pose.targets import heatmaps, tag_indices
from nas.pose.transforms import (
    Augment,
    apply_to_points,
    compose,
    hflip_matrix,
    letterbox_matrix,
    random_affine_matrix,
    stride_matrix,
    warp_image,
    warp_keypoints,
)


def test_heatmap_peaks_at_the_joint_with_sigma_two():
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, 3] = (10, 20, 2)
    kp[0, 5] = (40, 40, 0)  # unlabeled: no peak
    h = heatmaps(kp, 32, 17)
    assert h.shape == (17, 32, 32)
    assert np.unravel_index(h[3].argmax(), h[3].shape) == (20, 10) and np.isclose(h[3, 20, 10], 1.0)
    assert np.isclose(h[3, 20, 12], np.exp(-4 / 8)), "Gaussian of sigma 2"
    assert h[5].max() == 0 and h[0].max() == 0


def test_two_people_take_the_max_not_the_sum():
    kp = np.zeros((2, 17, 3), np.float32)
    kp[:, 0] = [(10, 10, 2), (11, 10, 2)]
    assert heatmaps(kp, 32, 17)[0].max() <= 1.0 + 1e-6


def test_tag_indices_point_at_the_joint_pixel():
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, 2] = (5, 7, 1)
    t = tag_indices(kp, 16, 17, MAX_PEOPLE)
    assert t.shape == (MAX_PEOPLE, 17, 2)
    assert tuple(t[0, 2]) == (2 * 256 + 7 * 16 + 5, 1) and t[0, 3, 1] == 0 and t[1:].sum() == 0
    around = tag_indices(kp, 16, 17, MAX_PEOPLE, radius=1)
    assert around.shape == (MAX_PEOPLE, 17 * 9, 2)
    cells = {(int(i) - 2 * 256) for i, ok in around[0, 2 * 9:3 * 9] if ok}
    assert cells == {(7 + dy) * 16 + 5 + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    edge = np.zeros((1, 17, 3), np.float32)
    edge[0, 0] = (0, 0, 2)
    assert tag_indices(edge, 16, 17, MAX_PEOPLE, radius=1)[0, :9, 1].sum() == 4, "clipped at the border"


def test_keypoints_follow_the_image_under_affine_and_flip():
    rng = np.random.default_rng(0)
    img = np.zeros((90, 120, 3), np.uint8)
    img[30, 80] = 255
    m = compose(hflip_matrix(64), random_affine_matrix(120, 90, 64, rng, rotation=30))
    warped = warp_image(img.astype(np.float32), m, 64)[..., 0]
    x, y = apply_to_points(m, np.array([80.0, 30.0]))
    yy, xx = np.unravel_index(warped.argmax(), warped.shape)
    assert abs(xx - x) <= 1 and abs(yy - y) <= 1


def test_joints_leaving_the_square_become_unlabeled():
    kp = np.array([[[10, 10, 2], [500, 10, 2], [20, 20, 1]]], np.float32)
    out = warp_keypoints(kp, letterbox_matrix(100, 100, 50), 50)
    assert out[0, :, 2].tolist() == [2, 0, 1]


def test_strides_share_one_pixel_centre_convention():
    # an input point maps to stride-2 and stride-4 maps consistently with bilinear upsampling
    p = np.array([37.0, 21.0])
    u4, u2 = apply_to_points(stride_matrix(4), p), apply_to_points(stride_matrix(2), p)
    assert np.allclose((u4 + 0.5) * 4 - 0.5, p) and np.allclose((u2 + 0.5) * 2 - 0.5, p)


def test_training_examples_at_the_requested_size(synth_small):
    ds = CocoPoseDataset(synth_small / "annotations.json", synth_small / "images")
    ts = PoseTrainSet(ds, (4, 2), augment=None)
    index = next(i for i, image_id in enumerate(ds.image_ids) if len(ds.people(image_id)[0]))
    image, heats, masks, tags, people = ts[(index, 96)]
    assert image.shape == (3, 96, 96)
    assert [h.shape for h in heats] == [(17, 24, 24), (17, 48, 48)] and masks[1].shape == (48, 48)
    assert tags.shape == (MAX_PEOPLE, 17, 2) and people.shape == (MAX_PEOPLE, 17, 3)
    # the flat tag indices land on heatmap peaks of the stride-4 map
    flat = heats[0].reshape(-1)[tags[..., 0][tags[..., 1] == 1]]
    assert len(flat) > 0 and (flat > 0.5).all()
    # the people rows are the same joints, at sub-pixel precision: each rounds to its tag's pixel
    labelled = people[..., 2] > 0
    pixel = people[..., 1].round() * 24 + people[..., 0].round() + torch.arange(17) * 24 * 24
    assert labelled.sum() == (tags[..., 1] == 1).sum() and torch.equal(pixel[labelled].long(), tags[..., 0][labelled])
    assert not people[len(ds.people(ds.image_ids[index])[0]):].any()  # padding rows are zero


def test_teacher_pairs_show_one_augmented_scene_at_two_sizes(synth_small):
    ds = CocoPoseDataset(synth_small / "annotations.json", synth_small / "images")
    pairs = TeacherPairs(PoseTrainSet(ds, (4,), Augment(flip=0.5)), teacher_size=128)
    index = next(i for i, image_id in enumerate(ds.image_ids) if len(ds.people(image_id)[0]))
    (big, big_heats, *_), (small, small_heats, *_) = pairs[(index, 64)]
    assert big.shape == (3, 128, 128) and small.shape == (3, 64, 64)
    # the teacher's maps, resized as supernet training resizes them, peak where the student's labels do
    resized = torch.nn.functional.interpolate(big_heats[0][None], size=(16, 16), mode="bilinear",
                                              align_corners=False)[0]
    joints = [j for j in range(17) if small_heats[0][j].max() > 0.9]
    assert joints, "a labelled joint in view"
    for j in joints:
        peak = np.array(np.unravel_index(int(small_heats[0][j].argmax()), (16, 16)))
        assert np.abs(np.array(np.unravel_index(int(resized[j].argmax()), (16, 16))) - peak).max() <= 1
    assert len(TeacherPairs(pairs.examples, None)[(index, 64)]) == 1  # one size: built once


def test_flip_swaps_left_and_right_heatmaps(synth_small):
    ds = CocoPoseDataset(synth_small / "annotations.json", synth_small / "images")
    plain = PoseTrainSet(ds, (4,), Augment(scale=(1, 1), rotation=0, translate=0, flip=0.0))[(1, 64)]
    flipped = PoseTrainSet(ds, (4,), Augment(scale=(1, 1), rotation=0, translate=0, flip=1.0))[(1, 64)]
    fi = ds.spec.flip_index
    expect = torch.flip(plain[1][0], dims=[2])[fi]
    assert torch.allclose(flipped[1][0], expect, atol=1e-4)
    assert torch.allclose(flipped[0], torch.flip(plain[0], dims=[2]), atol=1e-4)


def test_batches_share_a_size_and_ranks_split_the_data():
    s = ResolutionBatchSampler(100, 8, (64, 96, 128), seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 12
    assert all(len({size for _, size in b}) == 1 for b in batches)
    assert len({b[0][1] for b in batches}) > 1, "sizes vary across batches"
    r0 = {i for b in ResolutionBatchSampler(100, 8, (64,), 1, rank=0, num_replicas=2) for i, _ in b}
    r1 = {i for b in ResolutionBatchSampler(100, 8, (64,), 1, rank=1, num_replicas=2) for i, _ in b}
    assert r0 and r1 and not r0 & r1
