"""The query head inside the supernet: extraction, cost, ONNX and rebuilds on configs of each head."""
import math

import pytest
import torch

from nas.pose.codecs.query import CODEC as QUERY
from nas.subnet.onnx import max_abs_difference, session, to_onnx
from search_spaces import SearchSpace
from supernet.cost import arch_cost
from supernet.heads.query import centre_peaks, sample, snap
from supernet.network import build_static, extract
from tests.supernet.test_cost import ptflops_macs
from tests.supernet.test_supernet import max_difference, three_ways, trained_like


def query_configs(space: SearchSpace) -> list[dict]:
    """Query-head subnets at the head's smallest and largest choices, on random backbones."""
    small = space.with_head(space.random(3), "query")
    small["head"].update(queries=5, decoder_depth=1, decoder_width=16)
    return [space.with_head(space.max(), "query"), space.validate(small), space.with_head(space.random(4), "query")]


def test_one_supernet_holds_both_heads_and_hands_each_subnet_its_own():
    space = SearchSpace.load("tiny")
    supernet = trained_like(space)
    assert hasattr(supernet, "final") and hasattr(supernet, "query")
    ae, query = extract(supernet, space.max()), extract(supernet, query_configs(space)[0])
    assert hasattr(ae, "final") and not hasattr(ae, "query")
    assert hasattr(query, "query") and not hasattr(query, "final") and not hasattr(query, "up_high")
    ae_weights, query_weights = ae.state_dict(), query.state_dict()
    shared = [n for n in ae_weights if n.startswith("stages.")]
    assert shared and all(torch.equal(ae_weights[n], query_weights[n]) for n in shared)


def test_query_subnets_extract_exactly_and_rebuild_from_their_weights():
    space = SearchSpace.load("tiny")
    supernet = trained_like(space)
    for config in query_configs(space):
        active, out, rebuilt, _ = three_ways(supernet, config, torch.randn(2, 3, config["resolution"],
                                                                            config["resolution"]))
        assert out[0].shape == (2, config["head"]["queries"], 18, 3)
        assert max_difference(active, out) <= 1e-5 and max_difference(out, rebuilt) == 0.0
        scores = out[0][..., 2]
        assert torch.all((scores >= 0) & (scores <= 1))


def test_query_head_cost_agrees_with_ptflops():
    space = SearchSpace.load("tiny")
    supernet = trained_like(space)
    for config in query_configs(space):
        net = extract(supernet, config)
        macs, params = ptflops_macs(net, config["resolution"])
        cost = arch_cost(config)
        assert cost.macs == pytest.approx(macs, rel=0.02) and cost.params == params
    base = query_configs(space)[1]
    for key, value in (("queries", 10), ("decoder_depth", 2), ("decoder_width", 32)):
        assert arch_cost({**base, "head": {**base["head"], key: value}}).macs > arch_cost(base).macs


def test_query_head_exports_people_that_onnxruntime_matches():
    """Where the features are all zero (after a ReLU) a random centre map is flat, and top-k picks
    among equal values as each runtime likes; a trained one peaks where the features do: so here."""
    space = SearchSpace.load("tiny")
    for seed in (0, 3):  # 3: a map with fewer peaks than queries, filled up by value alike in both runtimes
        supernet = trained_like(space, seed)
        with torch.no_grad():
            supernet.query.centre.weight.abs_()
            supernet.query.centre.bias.fill_(-1.0)
        configs = query_configs(space)
        for config in configs if seed == 0 else configs[:1]:
            net = extract(supernet, config)
            model = to_onnx(net, config["resolution"])
            assert [o.name for o in session(model).get_outputs()] == list(QUERY.deployed_outputs)
            assert max_abs_difference(net, model, config["resolution"]) <= 1e-4


def test_training_outputs_every_decoder_layer_and_seeded_queries():
    space = SearchSpace.load("tiny")
    supernet = trained_like(space).train()
    config = query_configs(space)[0]
    supernet.set_active(config)
    seeds = torch.tensor([[[3.0, 4.0], [10.5, 7.25]]] * 2)
    centre, joints, joint_logits, person_logits, positions, heatmaps = supernet(torch.randn(2, 3, 96, 96), seeds=seeds)
    assert heatmaps.shape == (2, 17, *centre.shape[-2:]), "the joint heatmaps, at the centre map's size"
    q, depth = config["head"]["queries"], config["head"]["decoder_depth"]
    assert centre.shape == (2, 1, 24, 24)
    assert joints.shape == (depth, 2, q + 2, 17, 2) and joint_logits.shape == (depth, 2, q + 2, 17)
    assert person_logits.shape == (depth, 2, q + 2)
    assert torch.equal(positions[:, q:], seeds)


def test_centre_peaks_and_bilinear_sampling():
    centre = torch.zeros(1, 1, 12, 12)
    centre[0, 0, 2, 3], centre[0, 0, 2, 4], centre[0, 0, 9, 8] = 0.9, 0.5, 0.7  # (2, 4) is no peak
    positions, values = centre_peaks(centre, 2)
    assert positions.tolist() == [[[3.0, 2.0], [8.0, 9.0]]] and values[0].tolist() == pytest.approx([0.9, 0.7])
    features = torch.arange(16.0).reshape(1, 1, 4, 4)
    points = torch.tensor([[[[1.0, 2.0], [1.5, 2.0], [0.0, 0.5]]]])
    assert sample(features, points)[0, 0, :, 0].tolist() == [9.0, 9.5, 2.0]


def test_joints_snap_to_their_heatmaps_strongest_pixel_within_the_radius():
    heat = torch.zeros(1, 2, 20, 20)
    heat[0, 0, 4:7, 6:9] = torch.tensor([[0.1, 0.2, 0.1], [0.2, 0.8, 0.4], [0.1, 0.2, 0.1]])  # 2 pixels off
    heat[0, 0, 15, 15] = 1.0  # stronger, but out of reach
    heat[0, 1, 9, 9] = 1.7  # alone: no sub-pixel move, scored at most 1
    joints = torch.tensor([[[[5.4, 4.2], [10.0, 11.0]]]])
    placed, scores = snap(heat, joints, radius=3)
    curvature = 2 * math.log(0.8) - math.log(0.2) - math.log(0.4)
    assert placed[0, 0, 0].tolist() == pytest.approx([7 + math.log(2) / (2 * curvature), 5.0], abs=1e-6)
    assert placed[0, 0, 1].tolist() == [9.0, 9.0]
    assert scores.tolist() == [[pytest.approx([0.8, 1.0])]]


def test_the_query_losses_train_the_head_and_the_heatmaps_the_backbone():
    space = SearchSpace.load("tiny")
    supernet = trained_like(space).train()
    supernet.set_active(query_configs(space)[0])
    centre, joints, joint_logits, person_logits, _, heatmaps = supernet(torch.randn(1, 3, 96, 96))
    stem = next(supernet.stem.parameters())
    for loss, reaches_backbone in ((joints.sum() + person_logits.sum() + centre.sum(), False), (heatmaps.sum(), True)):
        supernet.zero_grad()
        loss.backward(retain_graph=True)
        assert (stem.grad is not None and stem.grad.abs().sum() > 0) == reaches_backbone


def test_a_checkpoint_arch_written_before_the_query_head_builds_the_ae_network():
    space = SearchSpace.load("cpu")
    config = space.preset("litepose_xs")
    old = {**config, "head": {"width": config["head"]["width"], "multi_resolution": True}}
    static = extract(trained_like(space), config)
    rebuilt = build_static(old, static.state_dict())
    assert rebuilt.arch == config and not hasattr(rebuilt, "query")
