"""`posenas latency measure|build-predictor` and `posenas latency-server`."""
from __future__ import annotations

from pathlib import Path

from nas.app.cli.command import Command, print_json_last
from nas.app.cli.flags import COUNT, INDEX, SEED, arch_flags, bounded, chosen_arch, cost_row, latency_flags, meter
from nas.config import Range
from nas.errors import PoseNASError
from nas.latency.runtimes import runtime_of
from nas.latency.settings import REFERENCE_NETWORK


class Measure(Command):
    """latency of one subnet (ONNX in onnxruntime by default)"""

    name = "latency measure"

    def add_arguments(self, p):
        arch_flags(p)
        p.add_argument("--json", action="store_true")
        latency_flags(p)

    def take_action(self, args):
        space, arch = chosen_arch(args)
        latency = meter(args)
        figures = latency.measure(space.canonical(arch), args.keypoints)
        settings = latency.backend.settings
        print(f"{runtime_of(settings).label}: {settings.latency_of} median {figures['median_ms']:.2f} ms, "
              f"p90 {figures['p90_ms']:.2f} ms, spread {figures['spread']:.2f} ({'cached' if figures['cached'] else 'measured'}, {settings.threads} "
              f"threads)")
        if "slowdown" in figures:
            print(f"  timed against the reference network {'/'.join(REFERENCE_NETWORK)}: it ran {figures['slowdown']:.2f}x "
                  f"its calibrated latency; load {figures['load']:.2f}")
        if settings.latency_of == "total":
            print(f"  network {figures['network_ms']:.2f} ms + post-processing {figures['postprocess_ms']:.2f} ms "
                  f"(in the graph {figures['in_graph_decode_ms']:.2f} ms, grouping {figures['people']} people "
                  f"{figures['grouping_ms']:.2f} ms)")
        if args.json:
            print_json_last({**figures, "backend": settings.backend, **cost_row(arch, args.keypoints)})


class Table(Command):
    """measure many subnets (random ones, or the space's presets) into a CSV table"""

    name = "latency table"

    def add_arguments(self, p):
        p.add_argument("--space", default="cpu", help="shipped space name (cpu, default, tiny) or YAML path")
        p.add_argument("--keypoints", type=COUNT, default=17)
        p.add_argument("--random", type=INDEX, default=0, help="this many random subnets (seeds --seed, --seed+1, ...)")
        p.add_argument("--seed", type=SEED, default=0)
        p.add_argument("--presets", action="store_true", help="the space's presets (min, max, LitePose-like, ...)")
        p.add_argument("--out", required=True, help="CSV file")
        latency_flags(p)

    def take_action(self, args):
        import pandas as pd
        from tqdm import tqdm

        from nas.io import write_text
        from search_spaces import SearchSpace

        space = SearchSpace.load(args.space)
        if args.random < 0 or not (args.random or args.presets):
            raise PoseNASError(f"--random {args.random}: give a positive count of subnets, or --presets")
        archs = {name: space.preset(name) for name in space.preset_names()} if args.presets else {}
        archs.update({f"random-{args.seed + i}": space.random(args.seed + i) for i in range(args.random)})
        latency, rows = meter(args), []
        for name, arch in tqdm(archs.items(), desc="latency", unit="subnet"):
            figures = latency.measure(space.canonical(arch), args.keypoints)
            rows.append({"subnet": name, **cost_row(arch, args.keypoints), **figures})
        write_text(args.out, pd.DataFrame(rows).to_csv(index=False))
        print(f"{len(rows)} subnets: {args.out}")


class BuildPredictor(Command):
    """measure subnets, fit the predictor, report its accuracy"""

    name = "latency build-predictor"

    def add_arguments(self, p):
        p.add_argument("--space", default="cpu")
        p.add_argument("--samples", type=COUNT, default=120)
        p.add_argument("--passes", type=COUNT, default=3, help="measurement passes over all subnets (median)")
        p.add_argument("--seed", type=SEED, default=0)
        p.add_argument("--out", required=True)
        latency_flags(p)

    def take_action(self, args):
        from nas.io import writer_lock
        from nas.latency.predictor import build_predictor
        from search_spaces import SearchSpace

        with writer_lock(args.out):
            report = build_predictor(SearchSpace.load(args.space), meter(args).backend, args.out, args.samples,
                                     passes=args.passes, seed=args.seed)
        repeat = report["repeatability_within_10pct"]
        print(f"held-out subnets within +/-10 %: {report['within_10pct']:.1%} of {report['held_out']} "
              f"(mean |error| {report['mean_abs_rel_error']:.1%}), {report['cross_validated_within_10pct']:.1%} of all "
              f"{report['subnets']} by {report['cross_validation_folds']}-fold cross-validation"
              + (f"; device repeatability (pass 2 vs 1): {repeat:.1%}" if repeat is not None else ""))
        print(f"predictor: {Path(args.out) / 'predictor.json'}")


class Adapt(Command):
    """move the shipped latency model to this device and target from a few designed measurements"""

    name = "latency adapt"

    def add_arguments(self, p):
        p.add_argument("--space", default="cpu", help="the space the search will search (shipped name or YAML path)")
        p.add_argument("--anchors", type=COUNT, default=20, help="subnets measured on the target (default 20)")
        p.add_argument("--out", required=True, help="the adapted latency model (JSON), for search --predictor")
        latency_flags(p)

    def take_action(self, args):
        from nas.latency.adaptation import adapted_reference, described
        from search_spaces import SearchSpace

        latency = meter(args)
        model = adapted_reference(latency, SearchSpace.load(args.space), args.anchors)
        model.save(args.out)
        print(f"latency model adapted to {latency.settings.target} {described(model)}\nlatency model: {args.out}")


class Server(Command):
    """measure ONNX models sent over HTTP on this device"""

    name = "latency-server"

    def add_arguments(self, p):
        p.add_argument("--port", type=bounded(int, Range(0, 65535)), default=8765, help="0: any free port")
        p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines (needs a token)")
        p.add_argument("--token-file", help="the token clients must send (default: $POSENAS_LATENCY_TOKEN; "
                                            "without one, loopback only)")
        p.add_argument("--timeout", type=bounded(float, Range(0.1, 3600)), default=10,
                       help="seconds a client may stay silent within a request before it is cut off")

    def take_action(self, args):
        from nas.latency.token import check_exposure, read_token

        token = read_token(args.token_file)
        check_exposure(args.host, token)  # before the measuring stack loads: a refusal comes at once
        from nas.latency.server import serve

        serve(args.port, args.host, token, args.timeout)


COMMANDS = [Measure, Table, BuildPredictor, Adapt, Server]
