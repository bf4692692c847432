"""Flags several commands share, each declared once: data sets, training settings, latency settings,
and the arch config a command works on."""
from __future__ import annotations

import argparse
import math
from dataclasses import fields

from nas.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range
from nas.errors import PoseNASError
from nas.latency.runtimes import RUNTIMES
from nas.latency.settings import LATENCY_OF, OPTIMIZATION_LEVELS, RuntimeSettings
from nas.subnet.precision import PRECISIONS
from search_spaces.space import HEAD_TYPES

TRAINING_SETTINGS = ("epochs", "batch_size", "space", "arch", "lr", "workers", "seed", "time_budget_min", "device",
                     "spec", "augment")


def bounded(kind: type, allowed: Range):
    """An argparse type: a finite ``kind`` (int or float) within ``allowed``; argparse names the
    flag in the one-line error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or not allowed.holds(value):
            raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number {allowed}")
        return value
    return parse


COUNT, INDEX, AMOUNT = bounded(int, AT_LEAST_ONE), bounded(int, NON_NEGATIVE), bounded(float, POSITIVE)
SEED, RESOLUTION = bounded(int, Range(0, 2 ** 32 - 1)), bounded(int, Range(32, 4096))
SHARE, PART = bounded(float, Range(0, 1)), bounded(float, Range(0, 1, above=True))


def data_flags(p: argparse.ArgumentParser, prefix: str = "", what: str = "a set folder") -> None:
    """``--data DIR`` (annotations.json + images/) or ``--ann GT.json --images DIR``."""
    p.add_argument(f"--{prefix}data", help=f"{what} (annotations.json + images/)")
    p.add_argument(f"--{prefix}ann", help="COCO-format keypoint annotations (instead of --data)")
    p.add_argument(f"--{prefix}images", help="the folder of the annotated images (with --ann)")


def data_paths(args: argparse.Namespace, prefix: str = "") -> tuple[str, str]:
    """(annotations, images) from ``--data DIR`` or ``--ann`` + ``--images``."""
    from nas.pose.dataset import set_files

    data, ann, images = (getattr(args, prefix + n) for n in ("data", "ann", "images"))
    if data:
        return set_files(data)
    if not ann:
        flag = prefix.replace("_", "-")
        raise PoseNASError(f"give --{flag}data DIR or --{flag}ann GT.json")
    return ann, images


def supernet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--supernet", required=True, help="supernet.pt of train-supernet, a zoo entry folder, or zoo:NAME "
                   "(posenas zoo list)")


def training_flags(p: argparse.ArgumentParser, space: bool = True) -> None:
    data_flags(p, what="training set folder")
    data_flags(p, "val-", "held-out set folder")
    if space:
        p.add_argument("--space", help="shipped space name or YAML path (default cpu)")
    p.add_argument("--config", help="YAML file of training settings (flags override it)")
    p.add_argument("--batch-size", type=COUNT)
    p.add_argument("--workers", type=INDEX)
    p.add_argument("--seed", type=SEED)
    p.add_argument("--time-budget-min", type=AMOUNT, help="a hard limit on training time")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="random affine + flip (default on; off for synthetic sets, see nas/app/configs/baseline.yaml)")
    p.add_argument("--device", help="auto (a GPU when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--spec", help="keypoint spec (default: detected from the annotations)")


def training_config(args: argparse.Namespace, kind, base: dict | None = None):
    """Training settings of ``kind`` from ``base``, then the --config YAML, then the flags given."""
    from nas.io import read_yaml

    settings = {**(base or {}), **(read_yaml(args.config, "config file") if args.config else {})}
    if args.data or args.ann:
        settings["train_ann"], settings["train_images"] = data_paths(args)
    if args.val_data or args.val_ann:
        settings["val_ann"], settings["val_images"] = data_paths(args, "val_")
    settings.update({name: getattr(args, name) for name in TRAINING_SETTINGS if getattr(args, name, None) is not None})
    if "train_ann" not in settings:
        raise PoseNASError("no training data: give --data DIR, --ann GT.json, or train_ann in --config")
    return kind.from_dict(settings, str(args.config or "command line"))


def latency_flags(p: argparse.ArgumentParser) -> None:
    default = RuntimeSettings()
    p.add_argument("--target", metavar="RUNTIME/PRECISION/THREADS",
                   help=f"the deployment it is timed for: runtime {', '.join(RUNTIMES)}; precision "
                        f"{', '.join(PRECISIONS)}; intra-op threads (0: the runtime's default); e.g. "
                        f"onnxruntime/int8/1, openvino/fp32/2 (default {default.target})")
    p.add_argument("--optimization", choices=OPTIMIZATION_LEVELS, help=f"default {default.optimization}")
    p.add_argument("--warmup", type=INDEX, help=f"untimed runs first (default {default.warmup})")
    p.add_argument("--repeats", type=COUNT, help=f"timed runs (default {default.repeats})")
    p.add_argument("--latency-of", choices=LATENCY_OF,
                   help=f"time the network alone, or the total from image to people with post-processing "
                        f"(default {default.latency_of})")
    p.add_argument("--people", type=INDEX, help=f"with --latency-of total: the crowd grouping is timed on "
                                              f"(default {default.people})")
    p.add_argument("--no-reference", dest="reference", action="store_false", default=None,
                   help="time alone, not against the reference network scaled by its calibrated latency")
    p.add_argument("--url", help="measure on a remote posenas latency-server (http://host:port)")
    p.add_argument("--token-file", help="the latency server's token (default: $POSENAS_LATENCY_TOKEN)")
    p.add_argument("--cache", default="results/latency-cache.sqlite", help="persistent measurement table")
    p.add_argument("--no-cache", action="store_true")


def runtime_settings(args: argparse.Namespace) -> RuntimeSettings:
    from nas.latency.settings import parse_target

    names = [f.name for f in fields(RuntimeSettings)]
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return RuntimeSettings.of({**given, **(parse_target(args.target) if args.target else {})}, "command line")


def meter(args: argparse.Namespace):
    from nas.latency.meter import make_meter
    from nas.latency.token import read_token

    token = read_token(args.token_file) if args.url else None
    return make_meter(runtime_settings(args), args.url, None if args.no_cache else args.cache, token)


def arch_flags(p: argparse.ArgumentParser, file: bool = True, random: bool = False) -> None:
    p.add_argument("--space", default="cpu", help="shipped space name (cpu, default, tiny) or YAML path")
    p.add_argument("--keypoints", type=COUNT, default=17, help="keypoints of the dataset (COCO: 17)")
    if file:
        p.add_argument("--arch", help="arch config JSON")
    p.add_argument("--preset", help="min, max, higherhrnet_w32, litepose_xs/s/m/l")
    p.add_argument("--head", help=f"the config under this head type ({', '.join(HEAD_TYPES)}; the space must allow "
                   "it), the head's own choices at their largest")
    if random:
        p.add_argument("--random", action="store_true")
        p.add_argument("--seed", type=SEED, default=0)


def chosen_arch(args: argparse.Namespace):
    """The space and the arch config named by ``--arch FILE``, ``--preset NAME`` or ``--random``,
    under ``--head`` where given."""
    from search_spaces import SearchSpace, read_arch

    space = SearchSpace.load(args.space)
    options = {flag: getattr(args, name) for flag, name in (("--arch ARCH.json", "arch"), ("--preset NAME", "preset"),
                                                            ("--random", "random")) if hasattr(args, name)}
    if sum(map(bool, options.values())) != 1:
        raise PoseNASError("give exactly one of " + ", ".join(options))
    if getattr(args, "arch", None):
        arch = read_arch(args.arch, space)
    else:
        arch = space.preset(args.preset) if args.preset else space.random(args.seed)
    return space, space.with_head(arch, args.head) if args.head else arch


def cost_row(arch: dict, keypoints: int) -> dict:
    from search_spaces import arch_hash
    from supernet.cost import arch_cost

    cost = arch_cost(arch, keypoints)
    return {"resolution": arch["resolution"], "macs": cost.macs, "params": cost.params, "arch_hash": arch_hash(arch)}
