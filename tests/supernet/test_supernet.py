"""The supernet: set_active vs extract equality on every shipped space, static rebuilds, ONNX."""
import math

import pytest
import torch
from torch import nn

from nas.subnet.onnx import max_abs_difference, session, to_onnx
from search_spaces import SearchSpace
from supernet.network import PoseNet, build_static, extract
from supernet.ops import DYNAMIC, DynamicConv2d
from supernet.tokens import joint_mask, prune_scores

COCO_SKELETON = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                 (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]
COCO_FLIPS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


def smallest_mbconv(space: SearchSpace) -> dict:
    """The smallest subnet of MBConv blocks (``min`` has basic blocks where a space offers them)."""
    config = space.min()
    for stage in config["stages"]:
        stage["block"] = "mbconv"
    return space.validate(config)


def trained_like(space: SearchSpace, seed: int = 0) -> PoseNet:
    """A supernet whose weights, kernel transformations and BN statistics are far from their
    initial values, so that a wrong slice anywhere shows in the outputs."""
    torch.manual_seed(seed)
    net = PoseNet.supernet(space, 17, joint_mask(17, COCO_SKELETON, COCO_FLIPS))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.2)
                module.bias.uniform_(-0.2, 0.2)
        for name, p in net.named_parameters():
            if name.startswith(("final", "tokens.to_", "query.")) and "norm" not in name:
                p.normal_(0, 0.2)
            if ".transform_" in name:
                p.add_(torch.randn_like(p), alpha=0.3)
    return net.eval()


def three_ways(supernet: PoseNet, config: dict, x: torch.Tensor) -> tuple:
    """A subnet's outputs on ``x`` from the supernet switched to it, from its extracted static twin
    and from that twin rebuilt from its config and weights alone; and the twin."""
    with torch.no_grad():
        active = supernet.set_active(config)(x)
        static = extract(supernet, config)
        out = static(x)
        rebuilt = build_static(config, {k: v.clone() for k, v in static.state_dict().items()})(x)
    return active, out, rebuilt, static


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [t.shape for t in a] == [t.shape for t in b]
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("name, count", [("tiny", 12), ("cpu", 6), pytest.param("default", 2, marks=pytest.mark.slow)])
def test_extracted_subnets_equal_the_active_supernet(name, count):
    space = SearchSpace.load(name)
    supernet = trained_like(space)
    configs = [space.min(), space.max()] + [space.random(s) for s in range(count)]
    assert name != "tiny" or {c["head"]["type"] for c in configs} == {"ae", "query"}
    for i, r in enumerate(space.dimensions[0].choices):  # every resolution at least once
        configs[i % len(configs)]["resolution"] = r
    if name == "default":  # keep the largest networks off the largest inputs: CPU time
        configs[1]["resolution"] = 256
    for config in configs:
        x = torch.randn(2, 3, config["resolution"], config["resolution"])
        with torch.no_grad():
            active = supernet.set_active(config)(x)
            static = extract(supernet, config)(x)
        if config["head"]["type"] == "query":  # people: joints and the person, x, y, score
            assert [a.shape for a in active] == [(2, config["head"]["queries"], 18, 3)]
        else:
            assert len(active) == (2 if config["head"]["multi_resolution"] else 1)
            assert active[0].shape == (2, 34, config["resolution"] // 4, config["resolution"] // 4)
        assert active[0].abs().max() > 0.01  # a real signal, not near-zero initial maps
        assert max_difference(active, static) <= 1e-5, config


def test_static_model_has_plain_ops_only_and_rebuilds_from_config_and_weights():
    space = SearchSpace.load("tiny")
    supernet = trained_like(space)
    config = space.max()
    config["stages"][3]["branches"][1]["depth"] = 0
    config["token"]["keep_ratio"] = 0.5
    static = extract(supernet, config)
    assert not any(isinstance(m, DYNAMIC) for m in static.modules())
    assert sum(p.numel() for p in static.parameters()) < sum(p.numel() for p in supernet.parameters())
    rebuilt = build_static(config, {k: v.clone() for k, v in static.state_dict().items()})
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert max_difference(static(x), rebuilt(x)) == 0.0
    assert torch.equal(rebuilt.tokens.joint_mask, supernet.tokens.joint_mask)


def test_depth_zero_branches_sit_out_and_shrink_towards_a_single_branch():
    space = SearchSpace.load("tiny")
    supernet = trained_like(space)
    full = space.max()
    single = space.preset("litepose_xs")
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a = supernet.set_active({**full, "resolution": 96})(x)[0]
        b = supernet.set_active({**single, "resolution": 96})(x)[0]
    assert not torch.allclose(a, b)
    static = extract(supernet, single)
    fusions = [n for n, _ in static.named_modules() if ".fuse." in n]
    assert fusions == []  # one active branch per stage: no exchange left


def test_inherited_weights_are_channel_prefixes_and_transformed_kernel_centres():
    space = SearchSpace.load("cpu")
    supernet = trained_like(space)
    config = smallest_mbconv(space)  # kernel 3 of 7: two transformations
    static = extract(supernet, config)
    big = dict(supernet.named_parameters())
    shrunk = 0
    for name, p in static.named_parameters():
        q = big[name]
        while p.dim() == 4 and p.shape[-1] < q.shape[-1]:  # depthwise: centre, then its k²×k² transformation
            n = q.shape[-1] - 2
            t = big[name.replace("weight", f"transform_{n}")]
            q = torch.einsum("cij,kij->ck", q[:, 0, 1:-1, 1:-1], t.view(n * n, n, n)).view(-1, 1, n, n)
            shrunk += n == p.shape[-1]
        assert torch.allclose(p, q[tuple(slice(0, n) for n in p.shape)], atol=1e-6), name
    assert shrunk >= 4  # min's blocks


def test_kernel_transformations_start_as_identity_and_old_weights_load_with_them():
    space = SearchSpace.load("cpu")
    fresh = PoseNet.supernet(space, 17)
    conv = next(m for m in fresh.modules() if isinstance(m, DynamicConv2d) and m.smaller_kernels)
    assert conv.smaller_kernels == (5, 3) and torch.equal(conv.transform_3, torch.eye(9))
    assert torch.equal(conv.kernel_weight(3), conv.weight[:, :, 2:5, 2:5])  # a plain centre crop
    trained = trained_like(space)
    older = {k: v for k, v in trained.state_dict().items() if ".transform_" not in k}  # saved before them
    fresh.load_state_dict(older)  # strict: nothing missing
    assert all(torch.equal(p, torch.eye(len(p))) for n, p in fresh.named_parameters() if ".transform_" in n)
    config = smallest_mbconv(space)
    x = torch.randn(1, 3, config["resolution"], config["resolution"])
    with torch.no_grad():
        assert not torch.allclose(trained.set_active(config)(x)[0], fresh.set_active(config)(x)[0])
    fresh.train().set_active(config)(x)[0].sum().backward()
    assert conv.transform_3.grad.abs().sum() > 0  # trained with the rest


def test_onnxruntime_matches_torch_on_extracted_subnets():
    space = SearchSpace.load("cpu")
    supernet = trained_like(space)
    # AE heads: a query head's joints snap to heatmap maxima, which near-ties in these untrained maps
    # leave to rounding (tests/subnet/test_export.py checks it on a trained supernet)
    configs = [space.max(), space.with_head(space.random(1), "ae"), space.with_head(space.random(2), "ae")]
    configs[0]["token"]["keep_ratio"] = 0.25  # pruning (top-k) must export too
    for config in configs:
        net = extract(supernet, config)
        model = to_onnx(net, config["resolution"], decode=False)
        assert [o.name for o in session(model).get_outputs()][-1] == (
            "stride2" if config["head"]["multi_resolution"] else "stride4")
        assert max_abs_difference(net, model, config["resolution"]) <= 1e-4  # the deployed model: test_export


def test_attention_pruning_keeps_top_k_visual_scores_and_the_joint_mask():
    k, n = 3, 10
    allowed = torch.cat([torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool),
                         torch.ones(n, k, dtype=torch.bool)])
    scores = torch.randn(2, 4, k + n, k + n)
    keep = math.ceil(0.3 * n)
    pruned = prune_scores(scores, k, keep, allowed).softmax(-1)
    visual = pruned[..., k:]
    assert torch.equal((visual > 0).sum(-1), torch.full((2, 4, k + n), keep))
    kept_min = visual.masked_fill(visual == 0, float("inf")).amin(-1)
    dropped_max = scores[..., k:].masked_fill(visual > 0, float("-inf")).amax(-1)
    kept_scores_min = scores[..., k:].masked_fill(visual == 0, float("inf")).amin(-1)
    assert torch.all(kept_scores_min > dropped_max) and torch.all(kept_min > 0)
    assert torch.all(pruned[..., 0, 2] == 0) and torch.all(pruned[..., 2, 0] == 0)  # masked joints
    assert torch.all(pruned[..., k:, :k] > 0)  # visual queries see every keypoint token


def test_joint_mask_links_neighbours_and_mirror_joints():
    mask = joint_mask(17, COCO_SKELETON, COCO_FLIPS)
    assert mask[9, 7] and mask[9, 10] and mask[9, 9]  # left wrist: left elbow, right wrist, itself
    assert not mask[9, 0] and not mask[9, 15]
    assert torch.equal(mask, mask.T)


def test_keep_ratio_changes_the_output_and_has_no_weights():
    space = SearchSpace.load("tiny")
    supernet = trained_like(space)
    config = space.max()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        full = supernet.set_active({**config, "token": {**config["token"], "keep_ratio": 1.0}})(x)[0]
        half = supernet.set_active({**config, "token": {**config["token"], "keep_ratio": 0.5}})(x)[0]
    assert (full - half).abs().max() > 1e-4
    a = extract(supernet, {**config, "token": {**config["token"], "keep_ratio": 1.0}})
    b = extract(supernet, {**config, "token": {**config["token"], "keep_ratio": 0.5}})
    assert a.state_dict().keys() == b.state_dict().keys()
