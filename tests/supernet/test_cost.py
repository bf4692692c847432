"""Analytic MACs and parameters agree with ptflops and with the model itself."""
import warnings

import pytest
from ptflops import get_model_complexity_info
from ptflops.flops_counter import FLOPS_BACKEND

from search_spaces import SearchSpace
from supernet.cost import arch_cost
from supernet.network import PoseNet, extract


def ptflops_macs(net, resolution: int) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_model_complexity_info(net, (3, resolution, resolution), as_strings=False,
                                         print_per_layer_stat=False, backend=FLOPS_BACKEND.ATEN, verbose=False)


@pytest.mark.parametrize("name, count", [("tiny", 8), ("cpu", 6), pytest.param("default", 2, marks=pytest.mark.slow)])
def test_analytic_cost_agrees_with_ptflops(name, count):
    space = SearchSpace.load(name)
    supernet = PoseNet.supernet(space).eval()
    configs = [space.min(), space.preset("higherhrnet_w32")] + [space.random(100 + s) for s in range(count)]
    configs[-1]["token"]["depth"] = max(space.spec["token"]["depth"])  # at least one with attention
    if name == "default":
        configs[1]["resolution"] = 256
    for config in configs:
        net = extract(supernet, config)
        macs, params = ptflops_macs(net, config["resolution"])
        cost = arch_cost(config)
        assert cost.macs == pytest.approx(macs, rel=0.02), config
        assert cost.params == sum(p.numel() for p in net.parameters()) == params


def test_cost_grows_with_every_kind_of_dimension():
    space = SearchSpace.load("cpu")
    base = space.min()
    macs = arch_cost(base).macs
    bigger = [
        {**base, "resolution": 256},
        {**base, "widths": [32, 24, 32, 48]},
        {**base, "head": {**base["head"], "width": 32, "multi_resolution": False}},
        {**base, "token": {**base["token"], "depth": 1, "width": 32, "keep_ratio": 0.25}},
    ]
    for config in bigger:
        assert arch_cost(config).macs > macs
    assert arch_cost(base, num_keypoints=14).macs < macs  # fewer output maps


def test_attention_pruning_is_priced_only_where_a_top_k_runs():
    """The token stage's top-k and mask run only when ``keep_ratio`` keeps fewer than all visual
    tokens (``supernet.tokens``); the latency predictor prices them apart."""
    space = SearchSpace.load("cpu")
    base = {**space.min(), "token": {"depth": 1, "width": 32, "keep_ratio": 1.0}}
    pruned = {**base, "token": {**base["token"], "keep_ratio": 0.25}}
    assert arch_cost(base).features["pruning"] == 0 < arch_cost(pruned).features["pruning"]
    assert arch_cost(base).features["attention"] == arch_cost(pruned).features["attention"] > 0


def test_the_query_heads_operator_count_follows_its_exported_graph():
    """What the latency model prices per launched operator: a decoder layer more adds as many
    operators to the cost as to the exported graph (within 10 %), and so does the head itself."""
    import onnx

    from nas.subnet.onnx import to_onnx

    space = SearchSpace.load("tiny")
    supernet = PoseNet.supernet(space).eval()
    ops, nodes = [], []
    for depth in (1, 2):
        arch = space.with_head(space.min(), "query")
        arch["head"]["decoder_depth"] = depth
        graph = onnx.load_from_string(to_onnx(extract(supernet, arch), arch["resolution"])).graph
        nodes.append(sum(n.op_type not in ("Constant", "Identity") and "/query/" in n.name for n in graph.node))
        ops.append(arch_cost(arch).features["ops"] - arch_cost(space.min()).features["ops"])
    assert ops[1] - ops[0] == pytest.approx(nodes[1] - nodes[0], rel=0.10)  # one decoder layer
    assert ops[0] == pytest.approx(nodes[0], rel=0.10)  # the head with one layer
