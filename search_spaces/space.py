"""A search space declared in YAML, and everything done with the arch configs it allows.

The space is a flat list of dimensions (a path into the config, a name, its choices); sampling,
mutation, validation, encoding and Optuna suggestions all walk that one list, so they cannot
disagree about what a config is.

An arch config is plain JSON data::

    {"resolution": 256, "stem": 16, "widths": [24, 32, 48, 64],
     "stages": [{"modules": 1, "block": "mbconv", "keep_stride": false,
                 "branches": [{"depth": 2, "kernel": 7, "expand": 4}]},
                {"modules": 1, "block": "mbconv", "keep_stride": false, "branches": [{...}, {...}]}, ...],
     "token": {"depth": 1, "width": 64, "keep_ratio": 0.5},
     "head": {"width": 32, "multi_resolution": true, "style": "litepose", "type": "ae",
              "queries": 10, "decoder_depth": 1, "decoder_width": 32}}

Stage ``s`` has branches ``0..s``; branch ``b`` runs at stride ``4 * 2**b`` with ``widths[b]``
channels. ``depth`` is blocks per branch per fusion module; a high-resolution branch (``b < s``)
may have depth 0 (it passes its input on: gradual shrinking), the stage's newest, lowest-
resolution branch may not. ``block`` picks a stage's blocks: ``mbconv`` (LitePose's inverted
residuals, depthwise-separable transitions and exchanges), ``basic`` (HRNet's two dense 3x3 convs,
dense transitions and exchanges) or, in the first stage only, ``bottleneck`` (HRNet's first stage:
bottlenecks at four times the stem's width, the stem's width inside); ``kernel`` and ``expand``
are MBConv's own. ``keep_stride: true`` keeps the last stage's branch at the stride of the one
before (LitePose's stride-16 last stage); it takes effect in a single-branch stage only.
``head.style`` picks how the branches meet: ``litepose`` (a fusion deconv head climbs from the
lowest branch to stride 4, with a deconvolution to stride 2 for ``multi_resolution``) or
``higherhrnet`` (the last module fuses every branch into the first; for ``multi_resolution`` the
stride-4 features and maps go through a deconvolution and four basic blocks at stride 2; it takes
no token stage). ``head.type`` picks the head: ``ae`` (heatmaps and associative-embedding
tags, grouped after the network) or ``query`` (people straight out of the network; ``queries``,
``decoder_depth`` and ``decoder_width`` are its own). A categorical dimension keeps the space file's
order: block types run from largest to smallest, head types have no order (the first choice
stands in for both "largest" and "smallest").
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SHIPPED = Path(__file__).resolve().parent
TOP_KEYS = ("resolution", "stem", "widths", "stages", "token", "head")
TOKEN_HEAD_DIM = 16  # channels per attention head: embed widths must be multiples of it
SNAP_RADIUS = 8  # the query head's joints snap to their heatmap's strongest pixel within this many stride-4 pixels
STEM_BLOCK = {"kernel": 3, "expand": 1}  # the fixed block after the stride-2 stem conv of every subnet
# Elastic groups, in the order progressive shrinking opens them.
GROUPS = ("resolution", "kernel", "depth", "width", "token", "head")


@dataclass(frozen=True)
class Key:
    """One elastic key of a space file: where its value sits in an arch config (``scope``), its
    type, the progressive-shrinking group that opens it, and its one choice where the space file
    leaves it out (None: the file must give it)."""
    scope: str  # "top", "widths" (one list per branch), "stage" (one per stage), "branch", "token", "head"
    kind: type  # int, float, bool, or str (categorical: choices keep the file's order)
    group: str
    default: tuple | None = None
    values: tuple = ()  # a categorical key's allowed values
    ordered: bool = False  # a categorical key whose file order runs from largest to smallest


# Every elastic key: a new dimension is one entry here (its block reads it from the config dict).
HEAD_TYPES = ("ae", "query")
HEAD_STYLES = ("higherhrnet", "litepose")
BLOCK_TYPES = ("mbconv", "basic", "bottleneck")
KEYS = {
    "resolution": Key("top", int, "resolution"),
    "stem": Key("top", int, "width"),
    "widths": Key("widths", int, "width"),
    "modules": Key("stage", int, "depth", (1,)),
    "block": Key("stage", str, "depth", ("mbconv",), BLOCK_TYPES, ordered=True),
    "keep_stride": Key("stage", bool, "depth", (False,)),
    "depth": Key("branch", int, "depth", (1,)),
    "kernel": Key("branch", int, "kernel", (3,)),
    "expand": Key("branch", int, "width", (4,)),
    "token.depth": Key("token", int, "token", (0,)),
    "token.width": Key("token", int, "width", (TOKEN_HEAD_DIM,)),
    "token.keep_ratio": Key("token", float, "token", (1.0,)),
    "head.width": Key("head", int, "width", (32,)),
    "head.multi_resolution": Key("head", bool, "depth", (False,)),
    "head.style": Key("head", str, "head", ("litepose",), HEAD_STYLES, ordered=True),
    "head.type": Key("head", str, "head", ("ae",), HEAD_TYPES),
    "head.queries": Key("head", int, "head", (10,)),
    "head.decoder_depth": Key("head", int, "head", (1,)),
    "head.decoder_width": Key("head", int, "head", (32,)),
}
QUERY_KEYS = ("queries", "decoder_depth", "decoder_width")  # inert unless head.type is query
NEWER_HEAD_KEYS = ("type", *QUERY_KEYS)  # what configs written before the query head lack
assert all(k.group in GROUPS for k in KEYS.values())


def scope_keys(scope: str) -> tuple[str, ...]:
    """The config keys of one scope, e.g. ("depth", "kernel", "expand") for a branch."""
    return tuple(name.split(".")[-1] for name, key in KEYS.items() if key.scope == scope)


STAGE_KEYS, BRANCH_KEYS = scope_keys("stage"), scope_keys("branch")
TOKEN_KEYS, HEAD_KEYS = scope_keys("token"), scope_keys("head")
MBCONV_KEYS = ("kernel", "expand")  # inert in a stage of HRNet blocks
# Keys added since configs were first written, and the value a config without them meant.
ADDED_LATER = {"stages": (("block", "mbconv"), ("keep_stride", False)), "head": (("style", "litepose"),)}


class SpaceError(ValueError):
    """A bad space file or arch config; the message is one line naming the field."""


@dataclass(frozen=True)
class Dimension:
    path: tuple  # where the value sits in an arch config, e.g. ("stages", 2, "branches", 0, "depth")
    choices: tuple
    key: str  # its entry in KEYS, e.g. "depth"

    @property
    def group(self) -> str:
        """Which progressive-shrinking group opens this dimension (see GROUPS)."""
        return KEYS[self.key].group

    @property
    def largest(self):
        """The largest choice; a categorical dimension's first."""
        return self.choices[0] if KEYS[self.key].kind is str else max(self.choices)

    @property
    def smallest(self):
        """The smallest choice; an ordered categorical dimension's last, an unordered one's first."""
        key = KEYS[self.key]
        return self.choices[-1 if key.ordered else 0] if key.kind is str else min(self.choices)

    @property
    def name(self) -> str:
        """Flat name used for Optuna parameters and encodings, e.g. ``stages.2.branches.0.depth``."""
        return ".".join(str(p) for p in self.path)


def field_name(path: tuple) -> str:
    """``stages[2].branches[0].depth``: how errors name a field."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _get(config: Any, path: tuple) -> Any:
    for p in path:
        config = config[p]
    return config


def _set(config: dict, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        config = config[p]
    config[path[-1]] = value


class SearchSpace:
    """The legal arch configs of one YAML file; see the module docstring for the config layout."""

    def __init__(self, spec: dict, source: str = "space"):
        self.source = source
        self.spec = _check_space(spec, source)
        s = self.spec
        self.name: str = s["name"]
        self.num_stages = len(s["widths"])
        dims = [Dimension(("resolution",), s["resolution"], "resolution"), Dimension(("stem",), s["stem"], "stem")]
        dims += [Dimension(("widths", b), tuple(c), "widths") for b, c in enumerate(s["widths"])]
        for st in range(self.num_stages):
            dims += [Dimension(("stages", st, key), s[key][st], key) for key in STAGE_KEYS]
            for b in range(st + 1):
                for key in BRANCH_KEYS:
                    choices = s[key]
                    if key == "depth" and b == st:  # the stage's newest branch needs a block
                        choices = tuple(d for d in choices if d > 0)
                    dims.append(Dimension(("stages", st, "branches", b, key), choices, key))
        dims += [Dimension((scope, k), s[scope][k], f"{scope}.{k}") for scope in ("token", "head")
                 for k in scope_keys(scope)]
        self.dimensions: tuple[Dimension, ...] = tuple(dims)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        """A shipped space by name (``cpu``, ``default``, ``tiny``) or a YAML file."""
        path = Path(name_or_path)
        if not path.suffix and (SHIPPED / f"{name_or_path}.yaml").exists():
            path = SHIPPED / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in SHIPPED.glob("*.yaml"))
            raise SpaceError(f"search space not found: {name_or_path} (shipped: {shipped}, or give a YAML path)")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise SpaceError(f"{path}:{where} malformed YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(spec, dict):
            raise SpaceError(f"{path}: a search space must be a YAML mapping")
        spec.setdefault("name", path.stem)
        return cls(spec, str(path))

    def _build(self, pick) -> dict:
        """A config with ``pick(dimension)`` for every dimension."""
        config: dict = {
            "resolution": None, "stem": None, "widths": [None] * self.num_stages,
            "stages": [{**dict.fromkeys(STAGE_KEYS), "branches": [dict.fromkeys(BRANCH_KEYS) for _ in range(s + 1)]}
                       for s in range(self.num_stages)],
            "token": dict.fromkeys(TOKEN_KEYS), "head": dict.fromkeys(HEAD_KEYS)}
        for dim in self.dimensions:
            _set(config, dim.path, pick(dim))
        return config

    def min(self, groups: tuple[str, ...] = GROUPS) -> dict:
        """The smallest subnet; dimensions outside ``groups`` stay at their largest choice."""
        return self._build(lambda d: d.smallest if d.group in groups else d.largest)

    def max(self) -> dict:
        return self._build(lambda d: d.largest)

    def random(self, rng: random.Random | int | None = None, groups: tuple[str, ...] = GROUPS) -> dict:
        """A uniform draw; dimensions outside ``groups`` stay at their largest choice."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return self._build(lambda d: rng.choice(d.choices) if d.group in groups else d.largest)

    def single_branch(self, config: dict) -> dict:
        """``config`` with every branch but each stage's last at depth 0 (LitePose's single branch:
        gradual shrinking carried to the end), where the space allows depth 0; a uniform draw
        seldom lands there (one in 729 in the ``cpu`` space: six such branches, three depths each)."""
        config = copy.deepcopy(config)
        for s, stage in enumerate(config["stages"]):
            for b, branch in enumerate(stage["branches"][:-1]):
                if 0 in self.choices(f"stages.{s}.branches.{b}.depth"):
                    branch["depth"] = 0
        return config

    def mutate(self, config: dict, rng: random.Random | int | None = None, prob: float = 0.1) -> dict:
        """Each dimension re-drawn with probability ``prob`` (the others kept), as evolutionary NAS does."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        config = self.validate(config)
        return self._build(lambda d: rng.choice(d.choices) if rng.random() < prob else _get(config, d.path))

    def suggest(self, trial) -> dict:
        """A config from an Optuna trial: one ``suggest_categorical`` per dimension (a static space,
        which NSGA-II and TPE both handle; inert choices are canonicalised afterwards)."""
        return self.canonical(self._build(lambda d: trial.suggest_categorical(d.name, d.choices)))

    # -- checking and identity -------------------------------------------------------------------
    def validate(self, config: Any, source: str = "arch config") -> dict:
        """A deep copy of ``config`` if it is legal here; otherwise SpaceError naming the field."""
        if not isinstance(config, dict):
            raise SpaceError(f"{source}: an arch config must be a JSON object, got {type(config).__name__}")
        _check_keys(config, TOP_KEYS, (), source)
        config = with_defaults(config)
        for key, n in (("widths", self.num_stages), ("stages", self.num_stages)):
            if not isinstance(config[key], list) or len(config[key]) != n:
                raise SpaceError(f"{source}: {key} must be a list of {n} entries (one per "
                                 f"{'branch' if key == 'widths' else 'stage'}) in space {self.name!r}")
        for s, stage in enumerate(config["stages"]):
            _check_keys(stage, (*STAGE_KEYS, "branches"), ("stages", s), source)
            if not isinstance(stage["branches"], list) or len(stage["branches"]) != s + 1:
                raise SpaceError(f"{source}: {field_name(('stages', s, 'branches'))} must list {s + 1} branches")
            for b, branch in enumerate(stage["branches"]):
                _check_keys(branch, BRANCH_KEYS, ("stages", s, "branches", b), source)
        _check_keys(config["token"], TOKEN_KEYS, ("token",), source)
        _check_keys(config["head"], HEAD_KEYS, ("head",), source)
        for dim in self.dimensions:
            value = _get(config, dim.path)
            if not any(value == c and type(value) is type(c) or (isinstance(c, float) and type(value) is int
                                                                  and value == c) for c in dim.choices):
                rule = ""
                if dim.path[-1] == "depth" and dim.path[0] == "stages" and value == 0:
                    rule = " (the newest, lowest-resolution branch of a stage needs at least one block)"
                raise SpaceError(f"{source}: {field_name(dim.path)} = {value!r} is not allowed{rule}; "
                                 f"allowed: {list(dim.choices)}")
        return config

    def canonical(self, config: dict) -> dict:
        """Inert choices set to their minimum (every key but depth of a depth-0 branch or token
        stage; MBConv's keys in a stage of HRNet blocks; the query head's keys under the AE head;
        the stride-2 heatmaps under the query head; the token stage and the head's width where the
        HigherHRNet head has none), so equal networks have equal configs and hashes."""
        config = copy.deepcopy(config)
        smallest = {d.path: d.smallest for d in self.dimensions}
        for s, stage in enumerate(config["stages"]):
            for b, branch in enumerate(stage["branches"]):
                inert = BRANCH_KEYS[1:] if branch["depth"] == 0 else MBCONV_KEYS if stage["block"] != "mbconv" else ()
                for key in inert:
                    branch[key] = smallest[("stages", s, "branches", b, key)]
            stage["keep_stride"] = keeps_stride(stage)
        head = config["head"]
        if not uses_tokens(config):
            for key in TOKEN_KEYS:
                config["token"][key] = smallest[("token", key)]
        for key in QUERY_KEYS if head["type"] == "ae" else ("multi_resolution",):
            head[key] = smallest[("head", key)]
        if head["style"] == "higherhrnet" and not (head["type"] == "ae" and head["multi_resolution"]):
            head["width"] = smallest[("head", "width")]  # only HigherHRNet's stride-2 module has it
        return config

    def networks(self, without: tuple[str, ...] = ()) -> list[Dimension]:
        """What makes this space's networks, to compare two spaces: its dimensions and their choices
        (not its name, description or preset table), but for the head keys ``without``."""
        return [d for d in self.dimensions if not (d.path[0] == "head" and d.path[1] in without)]

    def grows(self, earlier: "SearchSpace") -> bool:
        """Whether this space holds every network of ``earlier`` with the same largest one, only adding
        choices (a block type, a head type and its keys): ``earlier``'s supernet goes on training here,
        the modules of what is new starting fresh."""
        mine = {d.path: d for d in self.networks(NEWER_HEAD_KEYS)}
        theirs = {d.path: d for d in earlier.networks(NEWER_HEAD_KEYS)}
        return mine.keys() == theirs.keys() and all(
            set(d.choices) <= set(mine[path].choices) and d.largest == mine[path].largest for path, d in theirs.items())

    def choices(self, name: str) -> tuple:
        """The choices of a dimension by its flat name, e.g. ``head.type``."""
        return next(d.choices for d in self.dimensions if d.name == name)

    def with_head(self, config: dict, head_type: str) -> dict:
        """``config``'s backbone under head ``head_type``, the head's own keys at their largest:
        two heads compared at matched backbones."""
        if head_type not in self.choices("head.type"):
            raise SpaceError(f"head.type {head_type!r} is not in space {self.name!r}: "
                             f"{list(self.choices('head.type'))}")
        config = self.validate(config)
        config["head"]["type"] = head_type
        for d in self.dimensions:
            if d.path[0] == "head" and d.path[1] in QUERY_KEYS + ("multi_resolution",):
                config["head"][d.path[1]] = d.largest
        return self.canonical(config)

    # -- encodings -------------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def values(self, config: dict) -> list:
        """The config's choice of every dimension, in ``feature_names()`` order."""
        return [_get(config, d.path) for d in self.dimensions]

    def from_values(self, values: list, source: str = "values") -> dict:
        """The config whose choices are ``values`` (``values``' inverse), checked as any config is."""
        if not isinstance(values, list) or len(values) != len(self.dimensions):
            raise SpaceError(f"{source}: give one value per dimension of space {self.name!r} "
                             f"({len(self.dimensions)})")
        given = iter(values)
        return self.validate(self._build(lambda d: next(given)), source)

    def encode(self, config: dict) -> list[float]:
        """The config as numbers, one per dimension in ``feature_names()`` order (for predictors); a
        categorical choice as its index."""
        return [float(d.choices.index(v) if isinstance(v, str) else v)
                for d, v in zip(self.dimensions, self.values(config))]

    def preset(self, name: str) -> dict:
        """A published model mirrored as closely as this space allows: every value snapped to the
        nearest allowed choice (``min`` and ``max`` are the space's own extremes)."""
        from search_spaces.presets import PRESET_TABLES, PRESETS

        if name == "min":
            return self.min()
        if name == "max":
            return self.max()
        if name not in PRESETS:
            raise SpaceError(f"unknown preset {name!r}; known: {self.preset_names()}")
        ideal = PRESET_TABLES[self.spec["presets"]][name]

        def nearest(dim: Dimension):
            try:
                target = _get(ideal, dim.path)
            except (KeyError, IndexError):  # the space has more stages (or keys) than the model: smallest choice
                return dim.smallest
            if isinstance(target, str):
                return target if target in dim.choices else dim.smallest
            return min(dim.choices, key=lambda c: (abs(float(c) - float(target)), c))

        config = self._build(nearest)
        for s, stage in enumerate(config["stages"][:len(ideal["stages"])]):
            self._keep_blocks(s, stage, ideal["stages"][s])
        return self.canonical(config)

    def _keep_blocks(self, s: int, stage: dict, ideal: dict) -> None:
        """Re-split a stage into (modules, depth) so each branch keeps about the ideal number of
        blocks (modules x depth), which is what the network's depth is."""
        choice = {d.path[-1]: d.choices for d in self.dimensions if d.path[:2] == ("stages", s)}
        depth_choices = {b: next(d.choices for d in self.dimensions
                                 if d.path == ("stages", s, "branches", b, "depth")) for b in range(s + 1)}
        totals = [ideal["modules"] * b["depth"] for b in ideal["branches"]][:s + 1]

        def split(m: int) -> tuple[float, list[int]]:
            depths = [min(depth_choices[b], key=lambda d: (abs(m * d - t), d)) for b, t in enumerate(totals)]
            return sum(abs(m * d - t) for d, t in zip(depths, totals)), depths

        best = min(choice["modules"], key=lambda m: (split(m)[0], abs(m - ideal["modules"])))
        stage["modules"] = best
        for branch, depth in zip(stage["branches"], split(best)[1]):
            branch["depth"] = depth

    def resolve(self, arch: str | dict) -> dict:
        """An arch config from a preset name, a JSON file path, or a config, validated here and
        canonical: whatever door a config comes in by, one network has one config and one hash."""
        if isinstance(arch, dict):
            return self.canonical(self.validate(arch))
        if arch in self.preset_names():
            return self.canonical(self.preset(arch))
        if not arch.endswith(".json"):
            raise SpaceError(f"arch {arch!r} is neither a preset ({self.preset_names()}) nor a .json file")
        return read_arch(arch, self)

    @staticmethod
    def preset_names() -> list[str]:
        from search_spaces.presets import PRESETS

        return ["min", "max", *PRESETS]

    def describe(self) -> str:
        size = math.prod(len(d.choices) for d in self.dimensions)
        return f"space {self.name!r}: {len(self.dimensions)} dimensions, {size:.3g} configs"


def head_type(config: dict) -> str:
    """The head type of a config (one written before the query head has the AE head)."""
    return config["head"].get("type", KEYS["head.type"].default[0])


def with_defaults(config: dict) -> dict:
    """A copy of ``config`` with the keys it lacks at their defaults: a config written before the
    query head or the block types (a checkpoint's, an export folder's) is an AE-head, MBConv config."""
    config = copy.deepcopy(config)
    if isinstance(config.get("head"), dict):
        for key in NEWER_HEAD_KEYS:
            config["head"].setdefault(key, KEYS[f"head.{key}"].default[0])
        for key, value in ADDED_LATER["head"]:
            config["head"].setdefault(key, value)
    for stage in config.get("stages") if isinstance(config.get("stages"), list) else ():
        if isinstance(stage, dict):
            for key, value in ADDED_LATER["stages"]:
                stage.setdefault(key, value)
    return config


def keeps_stride(stage: dict) -> bool:
    """Whether a stage's new branch stays at the stride of the one before: asked for, and the stage
    single-branch (HRNet's exchanges between branches need them at different strides)."""
    return stage.get("keep_stride", False) and not any(branch["depth"] for branch in stage["branches"][:-1])


def uses_tokens(config: dict) -> bool:
    """Whether a config's token stage runs: it has layers, under the LitePose head."""
    return config["token"]["depth"] > 0 and config["head"].get("style", "litepose") == "litepose"


def arch_hash(config: dict) -> str:
    """A short stable key for a (canonical) config: it keys every cache. A config hashes without
    the keys added since, at their old values (the AE head's newer keys, MBConv blocks), as it did
    before them, so caches and records stay valid."""
    head = {k: v for k, v in config["head"].items() if (k, v) not in ADDED_LATER["head"]}
    if head.get("type", "ae") == "ae":
        head = {k: v for k, v in head.items() if k not in NEWER_HEAD_KEYS}
    config = {**config, "head": head, "stages": [{k: v for k, v in stage.items() if (k, v) not in ADDED_LATER["stages"]}
                                                 for stage in config["stages"]]}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_arch(path: str | Path, space: SearchSpace) -> dict:
    """An arch config from a JSON file, validated against ``space``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"arch config not found: {path}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SpaceError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    return space.canonical(space.validate(config, str(path)))


def write_arch(path: str | Path, config: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _check_keys(d: Any, keys: tuple, path: tuple, source: str) -> None:
    where = field_name(path) or "the config"
    if not isinstance(d, dict):
        raise SpaceError(f"{source}: {where} must be an object with {list(keys)}")
    unknown = sorted(set(d) - set(keys))
    if unknown:
        raise SpaceError(f"{source}: unknown field {field_name(path + (unknown[0],))!r}; "
                         f"{where} has {list(keys)}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise SpaceError(f"{source}: missing field {field_name(path + (missing[0],))!r}")


# -- the space file ----------------------------------------------------------------------------
FILE_KEYS = {"name": str, "description": str, "presets": str, "token": dict, "head": dict}  # besides KEYS
LIST_KEYS = tuple(name for name in KEYS if "." not in name)  # resolution, stem, widths, the stage and branch keys


def _choices(value: Any, where: str, source: str, key: Key = KEYS["widths"]) -> tuple:
    if not isinstance(value, list) or not value:
        raise SpaceError(f"{source}: {where} must be a non-empty list of choices, got {value!r}")
    kind = key.kind
    for v in value:
        ok = isinstance(v, bool) if kind is bool else (isinstance(v, kind) and not isinstance(v, bool))
        if kind is str:
            ok = v in key.values
        if kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok:
            raise SpaceError(f"{source}: {where} has {v!r}; choices must be "
                             + (f"among {list(key.values)}" if kind is str else kind.__name__))
    if len(set(value)) != len(value):
        raise SpaceError(f"{source}: {where} lists a choice twice: {value}")
    return tuple(value) if kind is str else tuple(sorted(value))


def _given(spec: dict, name: str, source: str, stages: int = 1):
    """The space file's choices for KEYS[name], or its one fixed default where the file has none."""
    scope, _, key = name.rpartition(".")
    value = spec.get(scope, {}).get(key) if scope else spec.get(name)
    if value is not None:
        return value
    default = KEYS[name].default
    if default is None:
        raise SpaceError(f"{source}: missing dimension {name!r}")
    return [list(default)] * stages if KEYS[name].scope == "stage" else list(default)


def _check_space(spec: dict, source: str) -> dict:
    if isinstance(spec.get("stem"), int) and not isinstance(spec["stem"], bool):
        spec = {**spec, "stem": [spec["stem"]]}  # one width: a fixed stem
    unknown = sorted(set(spec) - set(FILE_KEYS) - set(LIST_KEYS))
    if unknown:
        raise SpaceError(f"{source}: unknown dimension {unknown[0]!r}; known: {sorted({*FILE_KEYS, *LIST_KEYS})}")
    for key in ("name", "stem"):
        if key not in spec:
            raise SpaceError(f"{source}: missing dimension {key!r}")
    for key, kind in [*FILE_KEYS.items(), *((k, list) for k in LIST_KEYS)]:
        if key in spec and not isinstance(spec[key], kind):
            raise SpaceError(f"{source}: {key} must be a {kind.__name__}, got {spec[key]!r}")
    if spec.get("presets", "compact") not in ("published", "compact"):
        raise SpaceError(f"{source}: presets {spec['presets']!r} is neither 'published' (the published models) nor "
                         "'compact' (scaled to a CPU)")
    spec = {**spec, "presets": spec.get("presets", "compact")}  # none named: compact, what every space meant before
    for scope in ("token", "head"):
        unknown = sorted(set(spec.get(scope, {})) - set(scope_keys(scope)))
        if unknown:
            raise SpaceError(f"{source}: unknown dimension '{scope}.{unknown[0]}'; "
                             f"{scope} has {list(scope_keys(scope))}")
    out = dict(spec)
    widths = _given(spec, "widths", source)
    stages = len(widths)
    for key in STAGE_KEYS:
        per_stage = _given(spec, key, source, stages)
        if stages < 1 or len(per_stage) != stages:
            raise SpaceError(f"{source}: widths lists {stages} branches but {key} lists {len(per_stage)} "
                             "stages; stage s adds branch s, so they must agree")
        out[key] = [_choices(c, f"{key}[{s}]", source, KEYS[key]) for s, c in enumerate(per_stage)]
    out["widths"] = [_choices(w, f"widths[{b}]", source) for b, w in enumerate(widths)]
    for key in ("resolution", "stem", *BRANCH_KEYS):
        out[key] = _choices(_given(spec, key, source), key, source, KEYS[key])
    for scope in ("token", "head"):
        out[scope] = {k: _choices(_given(spec, f"{scope}.{k}", source), f"{scope}.{k}", source,
                                  KEYS[f"{scope}.{k}"]) for k in scope_keys(scope)}
    if "higherhrnet" in out["head"]["style"] and 0 not in out["token"]["depth"]:
        raise SpaceError(f"{source}: head.style higherhrnet takes no token stage, so token.depth must offer 0")
    if any("bottleneck" in blocks for blocks in out["block"][1:]):
        raise SpaceError(f"{source}: block 'bottleneck' is for the first stage only (HRNet's first stage)")
    if any(True in choices for choices in out["keep_stride"][:-1]) or stages < 2 and True in out["keep_stride"][0]:
        raise SpaceError(f"{source}: keep_stride true is for the last stage only (LitePose's), after at least "
                         "one other")
    if min(min(m) for m in out["modules"]) < 1:
        raise SpaceError(f"{source}: modules must be >= 1 in every stage")
    if min(min(w) for w in out["widths"]) < 1 or min(out["stem"]) < 1:
        raise SpaceError(f"{source}: widths and stem must be >= 1")
    if min(out["expand"]) < 2:
        raise SpaceError(f"{source}: expand ratios must be >= 2, got {list(out['expand'])} (the elastic "
                         "block always has its 1x1 expansion)")
    if max(out["depth"]) < 1 or min(out["depth"]) < 0:
        raise SpaceError(f"{source}: depth {list(out['depth'])} needs a choice >= 1 and none < 0 "
                         "(each stage's newest branch needs a block)")
    if any(k % 2 == 0 or k < 1 for k in out["kernel"]):
        raise SpaceError(f"{source}: kernel sizes must be odd, got {list(out['kernel'])}")
    stride = 2 ** (stages + 1)  # what the lowest branch runs at where the last stage downsamples
    if any(r % stride for r in out["resolution"]):
        raise SpaceError(f"{source}: every resolution must be a multiple of {stride} (the lowest branch's "
                         f"stride), got {list(out['resolution'])}")
    token = out["token"]
    if min(token["depth"]) < 0 or any(w % TOKEN_HEAD_DIM or w < 1 for w in token["width"]):
        raise SpaceError(f"{source}: token.width must be positive multiples of {TOKEN_HEAD_DIM} "
                         f"(attention head size) and token.depth >= 0, got {list(token['width'])}")
    if any(not 0 < r <= 1 for r in token["keep_ratio"]):
        raise SpaceError(f"{source}: token.keep_ratio must lie in (0, 1], got {list(token['keep_ratio'])}")
    head = out["head"]
    if min(head["width"]) < 1 or min(head["queries"]) < 1 or min(head["decoder_depth"]) < 1:
        raise SpaceError(f"{source}: head.width, head.queries and head.decoder_depth must be >= 1")
    if any(w % TOKEN_HEAD_DIM or w < 1 for w in head["decoder_width"]):
        raise SpaceError(f"{source}: head.decoder_width must be positive multiples of {TOKEN_HEAD_DIM} "
                         f"(attention head size), got {list(head['decoder_width'])}")
    return out

