"""`posenas run`, `posenas plot` and `posenas bench`: the whole pipeline, its plot, the benchmarks."""
from __future__ import annotations

from pathlib import Path

from nas.app.cli.command import Command
from nas.errors import PoseNASError


class Run(Command):
    """the whole NAS pipeline (embedded default: synthetic data, cpu.yaml, SQLite)"""

    name = "run"

    def add_arguments(self, p):
        p.add_argument("config", nargs="?", help="YAML run config; the embedded default when omitted")
        p.add_argument("--out", help="run folder (default results/<name>)")

    def take_action(self, args):
        from nas.app.pipeline import run_pipeline

        run_pipeline(args.config, args.out)


class Plot(Command):
    """accuracy-latency Pareto plot of a run or search folder"""

    name = "plot"

    def add_arguments(self, p):
        p.add_argument("--run", required=True)

    def take_action(self, args):
        from nas.app.report import plot_run

        for path in plot_run(args.run):
            print(path)


FIGURE_NAMES = ("synth", "oracle", "baseline", "cost", "largest", "overhead", "supernet", "predictor", "repeatability",
                "runtime", "decode", "search", "completion", "new-budget", "deployed-budget",
                "regret", "targets", "target-fronts", "latency-transfer", "contention",
                "budgets")  # --help without torch


class Bench(Command):
    """every benchmark figure beside its target: results/bench/bench.{json,md}"""

    name = "bench"

    def add_arguments(self, p):
        p.add_argument("--quick", action="store_true", help="small scale, under 10 minutes; full-scale targets not "
                       "judged")
        p.add_argument("--only", nargs="+", metavar="FIGURE", help=f"run these figures only ({', '.join(FIGURE_NAMES)})")
        p.add_argument("--out", default="results/bench")

    def take_action(self, args):
        from nas.app.bench import FIGURES, run_benchmarks

        unknown = sorted(set(args.only or ()) - set(FIGURES))
        if unknown:
            raise PoseNASError(f"--only: unknown figure(s) {unknown}; figures: {list(FIGURES)}")
        run_benchmarks(args.out, args.quick, args.only)
        print(f"figures: {Path(args.out) / 'bench.md'}")


COMMANDS = [Run, Plot, Bench]
