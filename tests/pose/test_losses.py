import torch

from nas.pose.losses import ae_loss, heatmap_loss


def test_heatmap_loss_is_zero_at_target_and_ignores_masked_pixels():
    t = [torch.rand(2, 17, 8, 8), torch.rand(2, 17, 16, 16)]
    m = [torch.ones(2, 8, 8), torch.ones(2, 16, 16)]
    assert heatmap_loss(t, t, m) == 0
    wrong = [x.clone() for x in t]
    wrong[1][:, :, :4] += 1.0
    assert heatmap_loss(wrong, t, m) > 0
    m[1][:, :4] = 0
    assert heatmap_loss(wrong, t, m) == 0, "errors under the ignore mask do not count"


def _joints(people_pixels, k=2, hw=16):
    j = torch.zeros(1, 4, k, 2, dtype=torch.long)
    for p, pixels in enumerate(people_pixels):
        for kk, pix in enumerate(pixels):
            j[0, p, kk] = torch.tensor([kk * hw + pix, 1])
    return j


def test_pull_is_zero_when_a_person_shares_one_tag_and_push_falls_as_people_separate():
    joints = _joints([[0, 1], [5, 6]])
    tags = torch.zeros(1, 2, 4, 4)
    tags.view(1, -1)[0, [0, 16 + 1]] = 0.0
    tags.view(1, -1)[0, [5, 16 + 6]] = 0.1
    pull, push_close = ae_loss(tags, joints)
    assert pull.abs() < 1e-8
    tags.view(1, -1)[0, [5, 16 + 6]] = 3.0
    _, push_far = ae_loss(tags, joints)
    assert push_far < 0.01 < push_close


def test_pull_grows_when_one_person_has_split_tags_and_gradients_flow():
    joints = _joints([[0, 1]])
    tags = torch.zeros(1, 2, 4, 4, requires_grad=True)
    with torch.no_grad():
        tags.view(1, -1)[0, 16 + 1] = 2.0
    pull, push = ae_loss(tags, joints)
    assert torch.isclose(pull, torch.tensor(1.0)) and push == 0, "one person: nothing to push"
    pull.backward()
    assert tags.grad.abs().sum() > 0


def test_background_weight_scales_only_errors_away_from_joints():
    t = torch.zeros(1, 1, 8, 8)
    t[0, 0, 4, 4] = 1.0
    m = [torch.ones(1, 8, 8)]
    on_peak, off_peak = torch.zeros_like(t), t.clone()
    off_peak[0, 0, 0, 0] = 1.0
    assert torch.isclose(heatmap_loss([on_peak], [t], m, 0.1), heatmap_loss([on_peak], [t], m))
    assert torch.isclose(heatmap_loss([off_peak], [t], m, 0.1), 0.1 * heatmap_loss([off_peak], [t], m))
