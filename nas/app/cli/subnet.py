"""`posenas eval-subnet|finetune|export`: subnets of a trained supernet with inherited weights."""
from __future__ import annotations

from pathlib import Path

from nas.app.cli.command import Command, print_json_last
from nas.app.cli.flags import (
    AMOUNT,
    COUNT,
    data_flags,
    data_paths,
    latency_flags,
    meter,
    supernet_flag,
    training_config,
    training_flags,
)
from nas.errors import PoseNASError


class EvalSubnet(Command):
    """AP of a subnet with inherited weights, BN recalibrated"""

    name = "eval-subnet"

    def add_arguments(self, p):
        supernet_flag(p)
        p.add_argument("--arch", required=True, help="arch config JSON or a preset name of the supernet's space")
        data_flags(p, what="evaluation set folder")
        p.add_argument("--calib-data", help="BN calibration images (default: the supernet's training set)")
        p.add_argument("--calib-images", type=COUNT, default=64)
        p.add_argument("--limit", type=COUNT, help="evaluate the first N images only")
        p.add_argument("--flip-test", action="store_true")
        p.add_argument("--json", action="store_true")

    def take_action(self, args):
        from nas.pose.dataset import CocoPoseDataset, set_files
        from nas.pose.evaluate import format_metrics, metrics_json
        from nas.subnet.inherit import TrainedSupernet

        supernet = TrainedSupernet.load(args.supernet, set_files(args.calib_data) if args.calib_data else None,
                                        args.calib_images)
        arch = supernet.space.resolve(args.arch)
        metrics = supernet.evaluate(arch, CocoPoseDataset(*data_paths(args), supernet.spec), args.flip_test,
                                    args.limit)
        print(f"{args.arch}: {format_metrics(metrics)}")
        if args.json:
            print_json_last(metrics_json(metrics))


class Finetune(Command):
    """finetune subnets from inherited weights (teacher: the largest) and export"""

    name = "finetune"

    def add_arguments(self, p):
        supernet_flag(p)
        p.add_argument("--arch", help="arch config JSON or a preset name")
        p.add_argument("--pareto", help="pareto.json of a search: finetune its --top best")
        p.add_argument("--top", type=COUNT, default=2)
        training_flags(p, space=False)  # training data defaults to the supernet's; --val-data: AP before and after
        p.add_argument("--epochs", type=AMOUNT)
        p.add_argument("--lr", type=AMOUNT)
        p.add_argument("--out", required=True, help="one folder per subnet inside; each resumes")
        latency_flags(p)

    def take_action(self, args):
        from nas.io import writer_lock
        from nas.search.results import pareto_winners
        from nas.subnet.inherit import TrainedSupernet
        from nas.train.finetune import FinetuneConfig, finetune_subnet
        from search_spaces import arch_hash

        supernet = TrainedSupernet.load(args.supernet)
        if bool(args.arch) == bool(args.pareto):
            raise PoseNASError("give exactly one of --arch ARCH.json|PRESET or --pareto PARETO.json")
        archs = ([supernet.space.resolve(args.arch)] if args.arch
                 else [supernet.space.validate(p["arch"]) for p in pareto_winners(args.pareto, args.top)])
        # by default, finetune on the supernet's training data (a zoo entry's is regenerated: skip it when given)
        own = {} if args.data or args.ann else dict(zip(("train_ann", "train_images"), supernet.train_files))
        cfg = training_config(args, FinetuneConfig, own)
        latency = meter(args)
        with writer_lock(args.out):
            for i, arch in enumerate(archs):
                record = finetune_subnet(args.supernet, arch, cfg, Path(args.out) / f"{i + 1}-{arch_hash(arch)}",
                                         latency)
                print(f"{record['arch_hash']}: AP {record['before']['AP']} inherited -> {record['after']['AP']} "
                      f"finetuned; exported to {record['export']}")


class Export(Command):
    """a subnet with inherited weights as safetensors + arch + ONNX + card"""

    name = "export"

    def add_arguments(self, p):
        supernet_flag(p)
        p.add_argument("--arch", required=True, help="arch config JSON or a preset name")
        p.add_argument("--out", required=True)
        data_flags(p, what="the set whose AP the card records")
        p.add_argument("--calib-images", type=COUNT, default=64)
        p.add_argument("--flip-test", action="store_true")
        p.add_argument("--refine", help="a skeleton completer folder (posenas completion train) that travels "
                       "with the subnet and completes the joints its head missed")
        latency_flags(p)

    def take_action(self, args):
        from nas.pose.completion import Completion
        from nas.pose.dataset import CocoPoseDataset
        from nas.pose.evaluate import evaluate_network, format_metrics, metrics_json
        from nas.subnet.export import export_subnet
        from nas.subnet.inherit import TrainedSupernet
        from nas.subnet.precision import precision_of

        supernet = TrainedSupernet.load(args.supernet, calibration_images=args.calib_images)
        arch = supernet.space.resolve(args.arch)
        refine = Completion.load(args.refine) if args.refine else None
        if refine is not None and refine.spec.name != supernet.spec:
            raise PoseNASError(f"--refine {args.refine}: completes {refine.spec.name} skeletons, the supernet "
                               f"detects {supernet.spec}")
        net = supernet.inherit(arch)
        metrics, dataset = None, None
        if args.data or args.ann:
            dataset = CocoPoseDataset(*data_paths(args), supernet.spec)
            metrics = metrics_json(evaluate_network(net, dataset, arch["resolution"], args.flip_test, progress=True,
                                                    refine=refine)[0])
            print(format_metrics(metrics))
        latency = meter(args)
        card = export_subnet(net, arch, args.out, supernet.spec, metrics,
                             latency.card_entry(arch, supernet.num_keypoints),
                             source={"supernet": args.supernet, "synthetic": supernet.synthetic},
                             refine=refine, precision=precision_of(latency.settings.precision),
                             calibration=supernet.calibration, check=dataset)
        if "precision" in card:
            kept = card["precision"]["against_fp32"]
            print(f"{card['precision']['file']}: finds {kept['found']} of the fp32 model's {kept['people']} people "
                  f"on {kept['images']} images at OKS >= {kept['oks_at_least']} (mean OKS {kept['mean_oks']})")
        latency, difference = card.get("latency", {}), card["onnx"]["max_abs_difference"]
        print(f"exported {card['arch_hash']} to {args.out}: {card['macs'] / 1e9:.3f} GMACs, "
              f"{latency.get('median_ms', float('nan')):.2f} ms, ONNX max |diff| {difference:.1e}")


COMMANDS = [EvalSubnet, Finetune, Export]
