"""The query head's training: Hungarian matching on a hand-made case, and which queries learn what."""
import torch

from nas.pose.keypoints import get_spec
from nas.pose.matching import centre_maps, match, people_geometry, query_loss, seeded_people

SIGMAS = torch.as_tensor(get_spec("coco").sigmas, dtype=torch.float32)


def person(x: float, y: float = 5.0) -> torch.Tensor:
    """Every joint at (x, y), labelled."""
    return torch.tensor([[x, y, 2.0]] * 17)


def test_matching_finds_the_least_total_cost_where_greedy_would_not():
    # proposal 0 is nearest to A (1 px) but also near B (2 px); proposal 1 is 2 px from A, 5 px from B.
    # Greedy takes (0, A) first and pays 1 + 5; the assignment pays 2 + 2.
    people = torch.stack([person(0.0), person(3.0)])
    proposals = torch.stack([person(1.0)[:, :2], person(-2.0)[:, :2]])
    areas = torch.ones(2)  # a tiny person: OKS is about 0 at these distances, the cost is L1's
    rows, cols = match(proposals, torch.zeros(2), people, areas, SIGMAS)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}


def test_the_class_cost_prefers_the_confident_proposal_among_equals():
    people = person(0.0)[None]
    proposals = torch.stack([person(1.0)[:, :2], person(1.0)[:, :2]])
    rows, cols = match(proposals, torch.tensor([-3.0, 3.0]), people, torch.ones(1), SIGMAS)
    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_centre_targets_peak_at_each_present_persons_centre():
    people = torch.zeros(1, 3, 17, 3)
    people[0, 0] = person(4.0, 6.0)
    people[0, 1, :2] = torch.tensor([[10.0, 10.0, 2.0], [12.0, 14.0, 1.0]])  # two labelled joints only
    centres, present, areas = people_geometry(people)
    assert present.tolist() == [[True, True, False]]
    assert centres[0, :2].tolist() == [[4.0, 6.0], [11.0, 12.0]]
    assert areas[0, 1] == 3 * 5  # the labelled joints' box, pixel-inclusive
    maps = centre_maps(centres, present, (16, 16))
    assert maps[0, 0, 6, 4] == 1.0 and maps[0, 0, 12, 11] == 1.0 and maps.max() == 1.0
    assert seeded_people(people).shape[1] == 2  # padding rows after the last person seed nothing


def test_only_matched_and_seeded_queries_learn_joints_and_every_query_learns_its_class():
    """Two proposals (one near the person, one far) and two seeded queries (the person, padding):
    joint gradients reach the matched proposal and the present person's seed alone."""
    people = torch.zeros(1, 2, 17, 3)
    people[0, 0] = person(8.0, 8.0)
    q, depth = 4, 2
    joints = torch.stack([person(9.0, 8.0)[:, :2], person(30.0, 30.0)[:, :2], person(7.0, 8.0)[:, :2],
                          person(0.0, 0.0)[:, :2]])[None].repeat(depth, 1, 1, 1)[:, None].requires_grad_()
    joint_logits = torch.zeros(depth, 1, q, 17, requires_grad=True)
    person_logits = torch.zeros(depth, 1, q, requires_grad=True)
    centre = torch.zeros(1, 1, 16, 16, requires_grad=True)
    outputs = [centre, joints, joint_logits, person_logits, None]
    loss = query_loss(outputs, people, torch.ones(1, 16, 16), SIGMAS)
    loss.backward()
    moved = joints.grad.abs().sum((0, 1, 3, 4))
    assert moved[0] > 0 and moved[2] > 0 and moved[1] == 0 and moved[3] == 0
    assert torch.all(person_logits.grad[:, 0, [0, 2]] < 0) and torch.all(person_logits.grad[:, 0, [1, 3]] > 0)
    assert centre.grad.abs().sum() > 0


def test_the_centre_loss_rewards_peaks_at_the_centres_and_ignores_masked_pixels():
    from nas.pose.matching import centre_focal_loss

    centres, present = torch.tensor([[[4.0, 6.0]]]), torch.tensor([[True]])
    target = centre_maps(centres, present, (12, 12))
    flat = torch.full((1, 1, 12, 12), -2.0)
    peaked = flat.clone()
    peaked[0, 0, 6, 4] = 4.0
    mask = torch.ones(1, 12, 12)
    assert centre_focal_loss(peaked, target, mask) < centre_focal_loss(flat, target, mask)
    wrong = flat.clone()
    wrong[0, 0, 0, 11] = 4.0  # a confident peak where there is no one
    assert centre_focal_loss(wrong, target, mask) > centre_focal_loss(flat, target, mask)
    mask[0, 0, 11] = 0
    assert centre_focal_loss(wrong, target, mask) == centre_focal_loss(flat, target, mask)
