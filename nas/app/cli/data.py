"""`posenas data synth|check`: make a synthetic set, summarise and check a COCO-format one."""
from __future__ import annotations

from nas.app.cli.command import Command, print_json_last
from nas.app.cli.flags import COUNT, RESOLUTION, SEED, bounded
from nas.config import Range


class Synth(Command):
    """write a synthetic COCO-format multi-person set"""

    name = "data synth"

    def add_arguments(self, p):
        p.add_argument("--out", required=True)
        p.add_argument("--images", type=COUNT, default=1000)
        p.add_argument("--seed", type=SEED, default=0)
        p.add_argument("--size", type=bounded(int, Range(16, 8192)), nargs=2, default=(256, 256), metavar=("W", "H"))

    def take_action(self, args):
        from nas.io import writer_lock
        from nas.pose.synth import generate

        with writer_lock(args.out):
            path = generate(args.out, args.images, args.seed, tuple(args.size))
        print(f"wrote {args.images} images and {path}")


class Check(Command):
    """summarize a dataset; --oracle gives the AP ceiling of the targets"""

    name = "data check"

    def add_arguments(self, p):
        p.add_argument("--ann", required=True)
        p.add_argument("--images")
        p.add_argument("--spec")
        p.add_argument("--oracle", action="store_true")
        p.add_argument("--resolution", type=RESOLUTION, default=512)
        p.add_argument("--json", action="store_true")

    def take_action(self, args):
        from nas.pose.datacheck import oracle_ap, summarize
        from nas.pose.dataset import CocoPoseDataset
        from nas.pose.evaluate import format_metrics, metrics_json

        ds = CocoPoseDataset(args.ann, args.images, args.spec)
        for image_id in ds.image_ids:  # every image must exist and decode
            ds.load_image(image_id)
        summary = summarize(ds)
        for key, value in summary.items():
            print(f"{key}: {value}")
        if args.oracle:
            metrics = oracle_ap(ds, args.resolution, progress=not args.json)
            print(f"oracle at {args.resolution}: {format_metrics(metrics)}")
            summary["oracle"] = {"resolution": args.resolution, **metrics_json(metrics)}
        if args.json:
            print_json_last(summary)


COMMANDS = [Synth, Check]
