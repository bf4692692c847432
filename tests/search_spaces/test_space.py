"""Search spaces: sampling, validation with named fields, JSON, encodings, Optuna, presets."""
import copy
import json
import random
import subprocess
import sys

import optuna
import pytest
import yaml

from search_spaces import SearchSpace, SpaceError, arch_hash, read_arch, write_arch
from search_spaces.space import QUERY_KEYS, SHIPPED

SPACES = ("tiny", "cpu", "default")


@pytest.mark.parametrize("name", SPACES)
def test_samples_presets_and_json_round_trip_are_valid(name):
    space = SearchSpace.load(name)
    configs = [space.min(), space.max()] + [space.random(s) for s in range(20)]
    configs += [space.preset(p) for p in space.preset_names()]
    for config in configs:
        assert space.validate(json.loads(json.dumps(config))) == config
    assert len({arch_hash(space.canonical(c)) for c in configs[2:22]}) == 20  # random configs differ
    for config in configs:  # the structural rule holds: each stage's newest branch has blocks
        assert all(stage["branches"][-1]["depth"] >= 1 for stage in config["stages"])


@pytest.mark.parametrize("name", SPACES)
def test_single_branch_keeps_each_stages_newest_branch_alone_and_nothing_else_changes(name):
    space = SearchSpace.load(name)
    for config in [space.max()] + [space.random(s) for s in range(20)]:
        single = space.single_branch(config)
        assert space.validate(single) == single
        for stage, before in zip(single["stages"], config["stages"]):
            assert [b["depth"] for b in stage["branches"][:-1]] == [0] * (len(stage["branches"]) - 1)
            assert stage["branches"][-1] == before["branches"][-1]
        assert {**single, "stages": None} == {**config, "stages": None}
    preset = space.preset("litepose_xs")  # LitePose is single-branch already
    assert space.single_branch(preset) == preset


def test_min_and_max_bound_every_number_but_the_query_heads_keys():
    """min and max carry the AE head, whose query keys are inert (at their smallest); a categorical
    dimension (block, head type) encodes the index of its choice, not a size."""
    space = SearchSpace.load("cpu")
    lo, hi = space.encode(space.min()), space.encode(space.max())
    bounded = [d.name not in (f"head.{k}" for k in QUERY_KEYS) and not isinstance(d.largest, str)
               for d in space.dimensions]
    for config in (space.random(s) for s in range(30)):
        assert all(a <= v <= b for a, v, b, ok in zip(lo, space.encode(config), hi, bounded) if ok)
    assert hi[0] == 256 and lo[0] == 160  # resolution comes first


def test_encoding_is_one_number_per_dimension_and_tells_configs_apart():
    space = SearchSpace.load("tiny")
    a, b = space.random(1), space.random(2)
    assert len(space.encode(a)) == len(space.feature_names()) == len(space.dimensions)
    assert all(isinstance(v, float) for v in space.encode(a))
    assert space.encode(a) != space.encode(b)


def test_mutation_changes_some_dimensions_and_stays_valid():
    space = SearchSpace.load("cpu")
    parent = space.random(0)
    rng = random.Random(5)
    children = [space.mutate(parent, rng, prob=0.2) for _ in range(20)]
    changed = [sum(x != y for x, y in zip(space.encode(parent), space.encode(c))) for c in children]
    assert all(space.validate(c) == c for c in children)
    assert max(changed) > 0 and min(changed) < len(space.dimensions) / 2
    assert space.mutate(parent, rng, prob=0.0) == parent


def test_optuna_trial_suggests_every_dimension():
    space = SearchSpace.load("cpu")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    config = space.suggest(trial)
    assert space.validate(config) == config
    assert set(trial.params) == set(space.feature_names())
    assert trial.params["resolution"] == config["resolution"]
    newest = [d for d in space.dimensions if d.path[-1] == "depth" and d.path[0] == "stages"
              and d.path[3] == d.path[1]]
    assert len(newest) == 4
    assert all(0 not in d.choices for d in newest)


def test_canonical_form_ignores_inert_choices():
    space = SearchSpace.load("cpu")
    config = space.max()
    config["stages"][3]["branches"][0]["depth"] = 0
    other = copy.deepcopy(config)
    other["stages"][3]["branches"][0]["kernel"] = 3  # irrelevant: the branch has no blocks
    assert arch_hash(space.canonical(config)) == arch_hash(space.canonical(other))
    assert arch_hash(config) != arch_hash(other)


def test_every_door_a_config_comes_in_by_makes_it_canonical(tmp_path):
    space = SearchSpace.load("cpu")
    xs = space.resolve("litepose_xs")  # no token stage: its width and keep-ratio build nothing
    other = copy.deepcopy(xs)
    other["token"].update(width=max(space.choices("token.width")), keep_ratio=max(space.choices("token.keep_ratio")))
    write_arch(tmp_path / "other.json", other)
    for door in (space.resolve(other), space.resolve(str(tmp_path / "other.json")),
                 read_arch(tmp_path / "other.json", space)):
        assert door == xs and arch_hash(door) == arch_hash(xs)


def test_presets_mirror_the_published_designs():
    space = SearchSpace.load("default")
    hr = space.preset("higherhrnet_w32")
    assert hr["widths"] == [32, 64, 128, 256] and hr["resolution"] == 512
    assert [s["modules"] for s in hr["stages"]] == [1, 1, 4, 3]
    assert all(b["depth"] == 4 for s in hr["stages"] for b in s["branches"])
    assert [s["block"] for s in hr["stages"]] == ["bottleneck", "basic", "basic", "basic"] and hr["stem"] == 64
    for name in ("litepose_xs", "litepose_s", "litepose_m", "litepose_l"):  # they grow by width and input alone
        lp = space.preset(name)
        assert all(b["depth"] == 0 for s in lp["stages"] for b in s["branches"][:-1])  # a single branch
        assert all(s["branches"][-1]["kernel"] == 7 and s["branches"][-1]["expand"] == 6 for s in lp["stages"])
        assert all(s["block"] == "mbconv" for s in lp["stages"]) and lp["stages"][-1]["keep_stride"] is True
        # depth beyond the space's choices is re-split into modules x depth: 8 blocks -> 2 x 4, 10 -> 2 x 5
        assert [s["modules"] * s["branches"][-1]["depth"] for s in lp["stages"]] == [6, 8, 10, 10]
    assert space.preset("litepose_xs")["widths"] == [16, 32, 48, 80]
    assert space.preset("litepose_l")["widths"] == [24, 64, 96, 160]
    with pytest.raises(SpaceError, match="unknown preset 'resnet'.*litepose_xs"):
        space.preset("resnet")


def _broken(mutate):
    config = SearchSpace.load("cpu").max()
    mutate(config)
    return config


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(colour=1), r"unknown field 'colour'"),
    (lambda c: c["stages"][1]["branches"][0].update(groups=2), r"unknown field 'stages\[1\]\.branches\[0\]\.groups'"),
    (lambda c: c["head"].pop("width"), r"missing field 'head\.width'"),
    (lambda c: c.update(resolution=300), r"resolution = 300 is not allowed; allowed: \[160, 192, 224, 256\]"),
    (lambda c: c["stages"][2]["branches"][1].update(kernel=9),
     r"stages\[2\]\.branches\[1\]\.kernel = 9 is not allowed; allowed: \[3, 5, 7\]"),
    (lambda c: c["stages"][2]["branches"][2].update(depth=0),
     r"stages\[2\]\.branches\[2\]\.depth = 0 is not allowed \(the newest, lowest-resolution branch"),
    (lambda c: c["stages"][1]["branches"].pop(), r"stages\[1\]\.branches must list 2 branches"),
    (lambda c: c["stages"].pop(), r"stages must be a list of 4 entries"),
    (lambda c: c["head"].update(multi_resolution=1), r"head\.multi_resolution = 1 is not allowed"),
    (lambda c: c["token"].update(keep_ratio=0.3), r"token\.keep_ratio = 0\.3 is not allowed"),
    (lambda c: c.update(stem=8), r"stem = 8 is not allowed; allowed: \[16\]"),
])
def test_bad_configs_name_the_field_and_the_allowed_values(mutate, message):
    with pytest.raises(SpaceError, match=message):
        SearchSpace.load("cpu").validate(_broken(mutate))


def test_arch_files_round_trip_and_bad_files_are_named(tmp_path):
    space = SearchSpace.load("tiny")
    config = space.random(3)
    assert read_arch(write_arch(tmp_path / "a.json", config), space) == space.canonical(config)
    (tmp_path / "bad.json").write_text('{"resolution": 64,')
    with pytest.raises(SpaceError, match=r"bad\.json: malformed JSON at line 1"):
        read_arch(tmp_path / "bad.json", space)
    with pytest.raises(SpaceError, match="arch config not found"):
        read_arch(tmp_path / "none.json", space)


def _space_file(tmp_path, edit) -> str:
    spec = yaml.safe_load((SHIPPED / "tiny.yaml").read_text())
    edit(spec)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("widths"), r"missing dimension 'widths'"),
    (lambda s: s.pop("resolution"), r"missing dimension 'resolution'"),
    (lambda s: s["token"].update(heads=[1]), r"unknown dimension 'token\.heads'"),
    (lambda s: s.update(blocks=[1]), r"unknown dimension 'blocks'"),
    (lambda s: s["modules"].pop(), r"widths lists 4 branches but modules lists 3 stages"),
    (lambda s: s.update(depth=[0]), r"depth \[0\] needs a choice >= 1"),
    (lambda s: s.update(resolution=[64, 100]), r"multiple of 32"),
    (lambda s: s["token"].update(width=[24]), r"token\.width must be positive multiples of 16"),
    (lambda s: s.update(kernel=[3, 4]), r"kernel sizes must be odd"),
    (lambda s: s["token"].update(keep_ratio=[0.0, 1.0]), r"keep_ratio must lie in \(0, 1\]"),
    (lambda s: s.update(expand=[2, 2]), r"expand lists a choice twice"),
    (lambda s: s.update(expand=[1, 2]), r"expand ratios must be >= 2"),
    (lambda s: s["head"].update(multi_resolution=[0, 1]), r"head\.multi_resolution has 0; choices must be bool"),
])
def test_bad_space_files_name_the_dimension(tmp_path, edit, message):
    with pytest.raises(SpaceError, match=message):
        SearchSpace.load(_space_file(tmp_path, edit))


def test_malformed_or_missing_space_file(tmp_path):
    (tmp_path / "s.yaml").write_text("widths: [[8, 12]\nstem: 8\n")
    with pytest.raises(SpaceError, match=r"s\.yaml: line \d+, column \d+ malformed YAML"):
        SearchSpace.load(tmp_path / "s.yaml")
    with pytest.raises(SpaceError, match=r"search space not found: nope \(shipped: \['cpu', 'default', 'tiny'\]"):
        SearchSpace.load("nope")


def test_search_spaces_does_not_import_torch():
    code = ("import sys; from search_spaces import SearchSpace; s = SearchSpace.load('cpu'); "
            "[s.preset(p) for p in s.preset_names()]; s.random(0); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_groups_restrict_sampling_for_progressive_shrinking():
    space = SearchSpace.load("cpu")
    largest = space.max()
    assert space.min(groups=()) == largest and space.random(3, groups=()) == largest
    only_kernel = space.min(groups=("kernel",))
    changed = {d.group for d in space.dimensions
               if space.encode(only_kernel)[space.dimensions.index(d)] != space.encode(largest)[space.dimensions.index(d)]}
    assert changed == {"kernel"}
    assert {d.group for d in space.dimensions} == {"resolution", "kernel", "depth", "width", "token", "head"}
    token = [d.name for d in space.dimensions if d.group == "token"]
    assert token == ["token.depth", "token.keep_ratio"]


def test_a_dimension_the_space_file_leaves_out_has_one_fixed_choice(tmp_path):
    def drop(s):
        s.pop("kernel")
        s["token"].pop("keep_ratio")
        s["head"].pop("multi_resolution")

    space = SearchSpace.load(_space_file(tmp_path, drop))
    choices = {d.key: d.choices for d in space.dimensions}
    assert choices["kernel"] == (3,) and choices["token.keep_ratio"] == (1.0,)
    assert choices["head.multi_resolution"] == (False,)
    assert space.random(0)["stages"][0]["branches"][0]["kernel"] == 3


def test_every_dimension_takes_its_group_from_the_key_table():
    from search_spaces.space import GROUPS, KEYS

    space = SearchSpace.load("cpu")
    assert {d.key for d in space.dimensions} == set(KEYS)
    groups = {d.name: d.group for d in space.dimensions}
    assert groups["stages.2.branches.1.kernel"] == "kernel" and groups["token.keep_ratio"] == "token"
    assert groups["token.width"] == "width" and groups["head.multi_resolution"] == "depth"
    assert groups["stages.3.modules"] == "depth" and groups["widths.0"] == "width"
    assert set(groups.values()) == set(GROUPS)


def test_the_head_type_is_categorical_and_its_first_choice_is_the_largest_and_smallest():
    space = SearchSpace.load("tiny")
    assert space.choices("head.type") == ("ae", "query")  # the file's order, not sorted
    assert space.max()["head"]["type"] == space.min()["head"]["type"] == "ae"
    types = {space.random(s)["head"]["type"] for s in range(20)}
    assert types == {"ae", "query"}
    query = space.with_head(space.random(1), "query")
    assert space.encode(query)[space.feature_names().index("head.type")] == 1.0
    assert query["head"]["multi_resolution"] is False  # inert under the query head: canonical
    ae = space.with_head(query, "ae")
    assert ae["head"]["queries"] == 5 and ae["head"]["decoder_width"] == 16  # inert under the AE head
    with pytest.raises(SpaceError, match=r"head.type = 'detr' is not allowed; allowed: \['ae', 'query'\]"):
        space.validate({**ae, "head": {**ae["head"], "type": "detr"}})
    with pytest.raises(SpaceError, match="head.type 'query' is not in space 'default'"):
        SearchSpace.load("default").with_head(SearchSpace.load("default").max(), "query")


def test_configs_written_before_the_query_head_load_and_hash_as_they_did():
    space = SearchSpace.load("cpu")
    config = space.preset("litepose_xs")
    old = {**config, "head": {"width": config["head"]["width"], "multi_resolution": True}}
    assert space.validate(old) == config
    assert arch_hash(config) == arch_hash(old) == "c6d4b6f7fd1ed4cc"  # the hash stand-alone records hold


def test_a_space_file_names_the_head_types_it_allows(tmp_path):
    spec = yaml.safe_load((SHIPPED / "tiny.yaml").read_text())
    spec["head"]["type"] = ["ae", "transformer"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpaceError, match=r"head.type has 'transformer'; choices must be among \['ae', 'query'\]"):
        SearchSpace.load(path)
    spec["head"]["type"], spec["head"]["decoder_width"] = ["query"], [24]
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpaceError, match="head.decoder_width must be positive multiples of 16"):
        SearchSpace.load(path)
