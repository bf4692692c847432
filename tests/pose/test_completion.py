"""Joint refinement by masked skeleton completion: the tree, the masking, the loss, and a
completer trained on synthetic skeletons alone that beats the midpoint heuristic on real people."""
import numpy as np
import pytest
import torch

from nas.errors import PoseNASError
from nas.pose.completion import (
    CHOSEN,
    REPLACED,
    Completion,
    coco_skeletons,
    mask_skeletons,
    masked_joint_loss,
    midpoint_fill,
    skeleton_tree,
    synthetic_skeletons,
    train_completion,
)
from nas.pose.dataset import CocoPoseDataset
from nas.pose.keypoints import COCO, person_oks
from tests.conftest import COCO_MINI

J = {name: i for i, name in enumerate(COCO.keypoints)}


def test_missing_joints_go_to_the_midpoint_of_parent_and_child_or_to_the_parent_of_a_leaf():
    parent, child = skeleton_tree(COCO)
    assert parent[J["left_elbow"]] == J["left_shoulder"] and child[J["left_elbow"]] == J["left_wrist"]
    assert child[J["left_wrist"]] == -1 and parent[J["nose"]] == -1
    joints = np.random.default_rng(0).uniform(0, 100, (1, 17, 2)).astype(np.float32)
    known = np.ones((1, 17), bool)
    known[0, [J["left_elbow"], J["right_wrist"]]] = False
    filled = midpoint_fill(joints, known, parent, child)
    assert np.allclose(filled[0, J["left_elbow"]], (joints[0, J["left_shoulder"]] + joints[0, J["left_wrist"]]) / 2)
    assert np.allclose(filled[0, J["right_wrist"]], joints[0, J["right_elbow"]])
    assert np.array_equal(filled[known], joints[known])


def test_masking_chooses_known_joints_only_and_moves_most_of_them_to_their_midpoint():
    parent, child = skeleton_tree(COCO)
    rng = np.random.default_rng(0)
    joints = rng.uniform(0, 100, (4000, 17, 2)).astype(np.float32)
    known = rng.random((4000, 17)) < 0.7
    inputs, chosen = mask_skeletons(joints, known, parent, child, rng)
    assert not (chosen & ~known).any() and chosen[known.any(1)].any(1).all()
    assert abs(chosen.sum() / known.sum() - CHOSEN) < 0.02
    moved = chosen & (np.abs(inputs - joints).sum(-1) > 0)
    assert abs(moved.sum() / chosen.sum() - REPLACED) < 0.03
    assert np.array_equal(inputs[known & ~chosen], joints[known & ~chosen])


def test_the_loss_counts_the_masked_joints_only():
    target = torch.zeros(2, 17, 2)
    chosen = torch.zeros(2, 17, dtype=torch.bool)
    chosen[0, 3] = chosen[1, 9] = True
    predicted = torch.ones(2, 17, 2)
    loss = masked_joint_loss(predicted, target, chosen)
    assert loss.item() == 2.0
    predicted[0, 4] += 5  # an unmasked joint
    assert masked_joint_loss(predicted, target, chosen).item() == loss.item()
    predicted[1, 9] += 5
    assert masked_joint_loss(predicted, target, chosen).item() > loss.item()


def test_a_completer_trained_on_synthetic_skeletons_beats_the_heuristic_on_coco_mini(tmp_path):
    ds = CocoPoseDataset(COCO_MINI / "annotations" / "person_keypoints_val.json", COCO_MINI / "images")
    joints, labelled, areas = coco_skeletons(ds)
    keep = labelled.sum(1) >= 6
    joints, labelled, areas = joints[keep], labelled[keep], areas[keep]
    rng = np.random.default_rng(1)
    dropped = labelled & (rng.random(labelled.shape) < 0.2)
    known = labelled & ~dropped
    train_completion(*synthetic_skeletons(2000, seed=0), COCO, steps=300).save(tmp_path)
    completion = Completion.load(tmp_path)  # as it is kept: safetensors and a card
    completed = completion(joints, known)
    assert np.array_equal(completed[known], joints[known])  # what was found stays where it was
    heuristic = midpoint_fill(joints, known, completion.parent, completion.child)
    assert dropped.sum() > 50
    assert (person_oks(completed, joints, dropped, areas, COCO).mean()
            > person_oks(heuristic, joints, dropped, areas, COCO).mean() + 0.05)


def test_a_changed_completer_file_is_refused(tmp_path):
    completion = train_completion(*synthetic_skeletons(50, seed=0), COCO, steps=2, batch=8)
    completion.save(tmp_path)
    joints = synthetic_skeletons(3, seed=1)[0]
    known = np.ones((3, 17), bool)
    known[:, 9] = False
    assert np.array_equal(Completion.load(tmp_path)(joints, known), completion(joints, known))
    weights = tmp_path / "completion.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(PoseNASError, match="SHA-256 differs"):
        Completion.load(tmp_path)
