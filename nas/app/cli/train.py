"""`posenas train` and `posenas train-supernet`: one network alone, or the once-for-all supernet."""
from __future__ import annotations

from pathlib import Path

from nas.app.cli.command import Command
from nas.app.cli.flags import AMOUNT, training_config, training_flags


class Train(Command):
    """train one static network (a preset or an arch config) alone"""

    name = "train"

    def add_arguments(self, p):
        training_flags(p)
        p.add_argument("--out", required=True, help="run folder; resumes from its checkpoint.pt when present")
        p.add_argument("--arch", help="preset name (default litepose_xs) or arch config JSON")
        p.add_argument("--epochs", type=AMOUNT)
        p.add_argument("--lr", type=AMOUNT)

    def take_action(self, args):
        from nas.pose.evaluate import format_metrics
        from nas.train.static import CHECKPOINT, TrainConfig, train

        metrics = train(training_config(args, TrainConfig), args.out)
        print(f"checkpoint: {Path(args.out) / CHECKPOINT}")
        if metrics:
            print(format_metrics(metrics))


class TrainSupernet(Command):
    """train the once-for-all supernet of a search space"""

    name = "train-supernet"

    def add_arguments(self, p):
        training_flags(p)
        p.add_argument("--out", required=True, help="run folder; resumes from its supernet.pt when present")

    def take_action(self, args):
        from nas.train.supernet import CHECKPOINT, SupernetConfig, train_supernet

        train_supernet(training_config(args, SupernetConfig), args.out)
        print(f"supernet: {Path(args.out) / CHECKPOINT}")


COMMANDS = [Train, TrainSupernet]
