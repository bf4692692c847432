"""`posenas predictor build`: the accuracy predictor of a supernet, judged on held-out subnets."""
from __future__ import annotations

from pathlib import Path

from nas.app.cli.command import Command, print_json_last
from nas.app.cli.flags import COUNT, INDEX, SEED, data_flags, data_paths, supernet_flag
from nas.errors import PoseNASError


class Build(Command):
    """evaluate subnets spread over the space, fit the accuracy predictor, report it"""

    name = "predictor build"

    def add_arguments(self, p):
        supernet_flag(p)
        data_flags(p, what="held-out evaluation set folder (the one searches score subnets on)")
        p.add_argument("--samples", type=COUNT, default=200,
                       help="subnets spread over the space (presets and an earlier build's included: a larger "
                            "number extends it); the subnets searches evaluated on the same supernet and data "
                            "(the evaluation cache, --studies) are fitted on too")
        p.add_argument("--near-front", type=INDEX, default=0, metavar="N",
                       help="then N mutations of the subnets on the AP-MACs front, where searches look (default 0)")
        p.add_argument("--eval-images", type=COUNT, default=100)
        p.add_argument("--calib-images", type=COUNT, default=64)
        p.add_argument("--flip-test", action="store_true")
        p.add_argument("--studies", nargs="+", default=[], metavar="STORAGE",
                       help="Optuna storage URLs whose trials on the same supernet and data are reused")
        p.add_argument("--seed", type=SEED, default=0)
        p.add_argument("--workers", type=COUNT, default=1,
                       help="subnets evaluated side by side, each in a process of one thread (default 1)")
        p.add_argument("--out", required=True, help="folder; a killed build resumes from its samples.csv")
        p.add_argument("--json", action="store_true")

    def take_action(self, args):
        from nas.io import writer_lock
        from nas.search.predictor_build import PREDICTOR, build_accuracy_predictor

        if args.samples < 10:
            raise PoseNASError(f"--samples {args.samples}: give at least 10")
        with writer_lock(args.out):
            report = build_accuracy_predictor(args.supernet, data_paths(args), args.out, args.samples,
                                              args.eval_images, args.calib_images, args.flip_test, args.studies,
                                              seed=args.seed, workers=args.workers,
                                              near_front_samples=args.near_front)
        held = report["held_out_scores"]
        print(f"{report['model']} on {report['fitted_on']} subnets; held-out {report['held_out']}: Kendall tau "
              f"{held['kendall_tau']} (top third {held['top_third_kendall_tau']}), Spearman {held['spearman']}, "
              f"MAE {held['mae']:.4f}")
        print(f"predictor: {Path(args.out) / PREDICTOR}")
        if args.json:
            print_json_last(report)


COMMANDS = [Build]
