"""`posenas search`: the Optuna search of subnets under MACs and latency budgets."""
from __future__ import annotations

from pathlib import Path

from nas.app.cli.command import Command, given
from nas.app.cli.flags import AMOUNT, COUNT, SEED, bounded, data_flags, data_paths, latency_flags, meter, supernet_flag
from nas.config import Range
from nas.search.config import LATENCY_STATS, SearchConfig
from nas.search.strategies import STRATEGIES

DEFAULT = SearchConfig.defaults()


class Search(Command):
    """Optuna search of subnets under MACs and latency budgets"""

    name = "search"

    def add_arguments(self, p):
        supernet_flag(p)
        data_flags(p, what="held-out evaluation set folder")
        p.add_argument("--latency-budget", type=AMOUNT, required=True, metavar="MS",
                       help="of the total from image to people by default (--latency-of network: the network's)")
        p.add_argument("--latency-stat", choices=list(LATENCY_STATS),
                       help="what the latency budget bounds: the median run (default) or the p90, which nine runs in "
                            "ten beat (a budget that holds under load)")
        p.add_argument("--macs-budget", help="e.g. 800M or 1.2G")
        p.add_argument("--trials", type=COUNT,
                       help=f"completed trials the study should hold (default {DEFAULT['trials']})")
        p.add_argument("--sampler", choices=list(STRATEGIES), help=f"default {DEFAULT['sampler']}")
        p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)")
        p.add_argument("--study", help=f"study name (default {DEFAULT['study']})")
        p.add_argument("--out", help="run folder (default: search/ beside the supernet)")
        p.add_argument("--eval-images", type=COUNT, help=f"default {DEFAULT['eval_images']}")
        p.add_argument("--calib-data", help="BN calibration set folder (default: the supernet's training set)")
        p.add_argument("--calib-images", type=COUNT, help=f"default {DEFAULT['calib_images']}")
        p.add_argument("--flip-test", action="store_true", default=None)
        p.add_argument("--timeout-min", type=AMOUNT, help="stop adding trials after this many minutes")
        p.add_argument("--predictor", help="latency predictor.json: skip measuring subnets predicted far over budget")
        p.add_argument("--accuracy-predictor", metavar="PREDICTOR",
                       help="accuracy predictor.json (posenas predictor build): NSGA-II on predicted AP and latency "
                            "(needs --predictor), then the best predicted subnets verified by real measurement")
        p.add_argument("--predicted-trials", type=COUNT, help=f"default {DEFAULT['predicted_trials']}")
        p.add_argument("--verify", type=COUNT, help=f"candidates verified for real (default {DEFAULT['verify']})")
        p.add_argument("--refine", type=bounded(int, Range(0)),
                       help="then at most this many mutations of the verified winners evaluated for real, until the "
                            f"front stops moving (0: none; default {DEFAULT['refine']})")
        p.add_argument("--no-refit", dest="refit", action="store_false", default=None,
                       help="keep the accuracy predictor as shipped, blind to what earlier searches of "
                            "the supernet on the same data evaluated (the same answer as a first search)")
        p.add_argument("--seed", type=SEED, help="sampler seed (give each worker its own)")
        p.add_argument("--population", type=bounded(int, Range(2)),
                       help=f"NSGA-II generation size (its first one is random; default {DEFAULT['population']})")
        latency_flags(p)

    def take_action(self, args):
        from nas.search.study import run_search
        from nas.subnet import zoo

        ann, images = data_paths(args)
        zoo_name = zoo.entry_name(args.supernet)
        out = args.out or (f"search-{zoo_name}" if zoo_name else str(Path(args.supernet).resolve().parent / "search"))
        flags = given(args, ("macs_budget", "latency_stat", "trials", "sampler", "storage", "study", "eval_images",
                             "calib_data",
                             "calib_images", "flip_test", "predictor", "seed", "population",
                             "accuracy_predictor", "predicted_trials", "verify", "refine", "refit", "timeout_min"))
        cfg = SearchConfig.from_dict({**flags, "supernet": args.supernet, "val_ann": ann, "val_images": images,
                                      "latency_budget_ms": args.latency_budget, "out": out}, "command line")
        summary = run_search(cfg, meter(args))
        if cfg.accuracy_predictor:
            print(f"{summary['trials']} predicted trials in {summary['search_s']:.1f} s; {summary['verified']} "
                  f"candidates verified, {summary['local']} of them by local search "
                  f"({summary['verified_feasible']} within budget when measured), "
                  f"{summary['pareto']} on the verified Pareto front (best AP {summary['best_ap']}); "
                  f"{summary['total_s']:.0f} s in all")
        else:
            print(f"{summary['trials']} trials, {summary.get('feasible', 0)} feasible, {summary.get('pareto', 0)} on "
                  f"the Pareto front (best AP {summary.get('best_ap')})")
        print(f"trials: {Path(out) / 'trials.csv'}\npareto: {Path(out) / 'pareto.json'}")
        if not cfg.accuracy_predictor:
            print(f"study: {cfg.storage_url}")


COMMANDS = [Search]
