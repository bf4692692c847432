"""HRNet's blocks and head beside LitePose's, and LitePose's stride-16 last stage: one supernet
holds them all (``hrnet-tiny.yaml``: the tiny space with every block type, both head styles and the
kept stride)."""
import json
from pathlib import Path

import pytest
import torch

from nas.subnet.onnx import max_abs_difference, to_onnx
from search_spaces import SearchSpace
from search_spaces.space import SpaceError, arch_hash
from supernet.cost import arch_cost
from supernet.network import PoseNet, extract
from tests.supernet.test_cost import ptflops_macs
from tests.supernet.test_supernet import max_difference, three_ways, trained_like

SPACE = Path(__file__).with_name("hrnet-tiny.yaml")


def single_branch(space: SearchSpace, seed: int) -> dict:
    """A LitePose-like config: every high-resolution branch at depth 0, the last stage at stride 16."""
    config = space.random(seed)
    for stage in config["stages"]:
        for branch in stage["branches"][:-1]:
            branch["depth"] = 0
    config["stages"][-1]["keep_stride"] = True
    return space.canonical(config)


def configs(space: SearchSpace) -> list[dict]:
    mixed = [space.canonical(space.random(s)) for s in (3, 4, 5, 7)]
    assert {s["block"] for c in mixed for s in c["stages"]} == {"bottleneck", "basic", "mbconv"}
    assert {(c["head"]["style"], c["head"]["type"]) for c in mixed} >= {("higherhrnet", "query"), ("litepose", "ae")}
    return [space.canonical(space.max()), space.canonical(space.min()), *mixed, single_branch(space, 5),
            single_branch(space, 6)]


def test_every_block_type_and_the_kept_stride_extract_exactly_and_cost_what_ptflops_counts():
    space = SearchSpace.load(SPACE)
    supernet = trained_like(space)
    assert [s["block"] for s in space.max()["stages"]] == ["bottleneck", "basic", "basic", "basic"]
    assert [s["block"] for s in space.min()["stages"]] == ["mbconv"] * 4, "block types run largest first"
    assert space.max()["head"]["style"] == "higherhrnet" and space.min()["head"]["style"] == "litepose"
    for config in configs(space):
        active, out, rebuilt, static = three_ways(supernet, config, torch.randn(2, 3, config["resolution"],
                                                                                 config["resolution"]))
        assert max_difference(active, out) <= 1e-5 and max_difference(out, rebuilt) == 0.0
        macs, params = ptflops_macs(static, config["resolution"])
        cost = arch_cost(config)
        assert cost.macs == pytest.approx(macs, rel=0.002) and cost.params == params
    hrnet = extract(supernet, space.canonical(space.max()))
    assert hasattr(hrnet, "higher") and not hasattr(hrnet, "ups") and not hasattr(hrnet, "up_high")
    last = hrnet.stages[-1].fusion_modules[-1]
    assert last.fuse and all(name.endswith("_0") for name in last.fuse), "HRNet's last module fuses into branch 0"
    kept = single_branch(space, 5)
    assert kept["stages"][-1]["keep_stride"] is True
    assert arch_cost(kept).macs > arch_cost({**kept, "stages": kept["stages"][:-1] + [
        {**kept["stages"][-1], "keep_stride": False}]}).macs, "the last stage at stride 16 costs more than at 32"


def test_hrnet_blocks_and_the_kept_stride_export_to_onnxruntime():
    space = SearchSpace.load(SPACE)
    supernet = trained_like(space, 1)
    hrnet = space.canonical(space.max())
    hrnet["head"]["multi_resolution"] = True
    for config in (hrnet, single_branch(space, 5)):
        net = extract(supernet, config)
        assert max_abs_difference(net, to_onnx(net, config["resolution"], decode=False), config["resolution"]) <= 1e-4


def test_the_space_places_each_block_type_and_the_kept_stride_where_they_hold(tmp_path):
    text = SPACE.read_text()
    for old, new, message in (
            ("[basic, mbconv], [basic, mbconv], [basic, mbconv]]", "[bottleneck, mbconv], [basic], [basic]]",
             "'bottleneck' is for the first stage only"),
            ("keep_stride: [[false], [false], [false], [false, true]]",
             "keep_stride: [[false], [true], [false], [false]]", "keep_stride true is for the last stage only"),
            ("[basic, mbconv]]", "[basic, resnet]]",
             r"block\[3\] has 'resnet'; choices must be among \['mbconv', 'basic', 'bottleneck'\]")):
        path = tmp_path / "space.yaml"
        path.write_text(text.replace(old, new, 1))
        with pytest.raises(SpaceError, match=message):
            SearchSpace.load(path)
    space = SearchSpace.load(SPACE)
    config = space.max()
    config["stages"][1]["branches"][1]["kernel"] = 5  # MBConv's keys mean nothing to basic blocks
    config["stages"][3]["keep_stride"] = True  # nor a kept stride to a stage whose branches exchange features
    config["token"]["depth"], config["head"]["multi_resolution"] = 1, False  # HigherHRNet's head: no tokens, no width
    canonical = space.canonical(config)
    assert canonical["stages"][1]["branches"][1]["kernel"] == 3 and canonical["stages"][3]["keep_stride"] is False
    assert canonical["token"] == space.min()["token"] and canonical["head"]["width"] == 8
    path = tmp_path / "space.yaml"
    path.write_text(text.replace("depth: [0, 1]", "depth: [1]"))
    with pytest.raises(SpaceError, match="higherhrnet takes no token stage"):
        SearchSpace.load(path)


def test_configs_written_before_the_block_types_build_and_hash_as_before():
    cpu = SearchSpace.load("cpu")
    preset = cpu.resolve("litepose_xs")
    old = {**preset, "stages": [{k: v for k, v in s.items() if k not in ("block", "keep_stride")}
                                for s in preset["stages"]],
           "head": {k: v for k, v in preset["head"].items() if k != "style"}}
    assert cpu.resolve(old) == preset and arch_hash(preset) == arch_hash(old) == "c6d4b6f7fd1ed4cc"
    stored = json.loads(json.dumps({k: v for k, v in cpu.spec.items() if k != "presets"}))  # as checkpoints hold it
    assert arch_hash(SearchSpace(stored).resolve("litepose_xs")) == "c6d4b6f7fd1ed4cc", "presets mean what they did"
    mbconv_only = SearchSpace({k: v for k, v in stored.items() if k != "block"})  # as cpu was before basic blocks
    names = PoseNet.supernet(mbconv_only).state_dict()
    assert not any(part in name for name in names
                   for part in ("basic", "bottleneck", "dense", "adapter", "lateral", "higher")), \
        "an MBConv-only supernet keeps its checkpoints' names"
