"""`posenas eval` and `posenas predict`: a network's COCO AP, and its skeletons drawn on an image."""
from __future__ import annotations

import sys
from pathlib import Path

from nas.app.cli.command import Command, print_json_last
from nas.app.cli.flags import RESOLUTION, SHARE
from nas.errors import PoseNASError


class Eval(Command):
    """COCO keypoint AP of a results file, or of a checkpoint run on the images"""

    name = "eval"

    def add_arguments(self, p):
        p.add_argument("--ann", required=True)
        p.add_argument("--results", help="COCO keypoint results JSON")
        p.add_argument("--checkpoint", help="a training checkpoint or an exported subnet folder to run on the --ann "
                       "images")
        p.add_argument("--images")
        p.add_argument("--size", type=RESOLUTION, help="input resolution (default: the training one)")
        p.add_argument("--flip-test", action="store_true")
        p.add_argument("--save-results", help="with --checkpoint: write the detections here")
        refine_flag(p)
        target_flag(p)
        p.add_argument("--spec")
        p.add_argument("--json", action="store_true")

    def take_action(self, args):
        from nas.pose.codecs import codec_of
        from nas.pose.dataset import CocoPoseDataset, load_annotations
        from nas.pose.evaluate import (
            evaluate,
            evaluate_deployed,
            evaluate_network,
            format_metrics,
            load_results,
            metrics_json,
        )

        if bool(args.results) == bool(args.checkpoint):
            raise PoseNASError("give exactly one of --results RESULTS.json or --checkpoint CKPT")
        if args.results:
            gt, spec, _ = load_annotations(args.ann, args.spec)
            metrics = evaluate(gt, load_results(args.results, gt, spec), spec)
        else:
            from nas.io import write_json
            from nas.subnet.export import load_network

            refine = refiner(args)
            net, arch, spec, synthetic = load_network(args.checkpoint)
            warn_if_synthetic(args.checkpoint, synthetic)
            ds = CocoPoseDataset(args.ann, args.images, args.spec or spec)
            if args.target:
                metrics, results = evaluate_deployed(deployed_run(args, arch), codec_of(arch), ds, arch["resolution"],
                                                     progress=True, refine=refine)
            else:
                metrics, results = evaluate_network(net, ds, args.size or arch["resolution"], args.flip_test,
                                                    progress=True, refine=refine)
            if args.save_results:
                write_json(args.save_results, results)
        print(format_metrics(metrics))
        if args.json:
            print_json_last(metrics_json(metrics))


class Predict(Command):
    """draw detected skeletons on an image"""

    name = "predict"

    def add_arguments(self, p):
        p.add_argument("image")
        p.add_argument("--checkpoint", required=True, help="a training checkpoint or an exported subnet folder")
        p.add_argument("--out", required=True)
        p.add_argument("--size", type=RESOLUTION)
        p.add_argument("--threshold", type=SHARE, default=0.2, help="minimum person score to draw")
        p.add_argument("--flip-test", action="store_true")
        refine_flag(p)
        target_flag(p)

    def take_action(self, args):
        import cv2

        from nas.pose.codecs import codec_of
        from nas.pose.draw import draw_people
        from nas.pose.inference import detect, people_from_deployed, prepare
        from nas.pose.keypoints import get_spec
        from nas.subnet.export import load_network

        refine = refiner(args)
        net, arch, spec_name, synthetic = load_network(args.checkpoint)
        warn_if_synthetic(args.checkpoint, synthetic)
        spec = get_spec(spec_name)
        image = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if image is None:
            raise PoseNASError(f"{args.image}: not found or not a readable image")
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if args.target:
            x, matrix = prepare(rgb, arch["resolution"])
            kps, scores = people_from_deployed(codec_of(arch), deployed_run(args, arch)(x[None]), matrix,
                                               arch["resolution"], spec, refine=refine)
        else:
            (kps, scores), = detect(net, [rgb], args.size or arch["resolution"], spec, args.flip_test, refine=refine)
        keep = scores >= args.threshold
        drawn = draw_people(rgb, kps[keep], spec)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
            raise PoseNASError(f"{out}: could not write the image (unknown extension?)")
        print(f"{int(keep.sum())} people drawn on {out}")


def warn_if_synthetic(path: str, synthetic: bool) -> None:
    if synthetic:
        print(f"warning: {path} learned from synthetic figures only (the embedded generator), not from photos: "
              f"on a real photo its people mean nothing; for real images train a supernet on a COCO-format set "
              f"(nas/app/configs/coco.yaml)", file=sys.stderr)


def refine_flag(p) -> None:
    p.add_argument("--refine", help="a skeleton completer folder (posenas completion train) to complete the "
                   "joints a head missed; an exported subnet's own (export --refine) is used without it")


def target_flag(p) -> None:
    p.add_argument("--target", metavar="RUNTIME/PRECISION/THREADS",
                   help="run an exported subnet's deployed model as this target runs it (its int8 model for an int8 "
                        "target), not the network in torch")


def deployed_run(args, arch: dict):
    """The export's model for ``--target``, loaded in its runtime: an input -> its outputs."""
    from nas.latency.runtimes import runtime_of
    from nas.latency.settings import RuntimeSettings, parse_target
    from nas.subnet.export import load_deployed

    if not Path(args.checkpoint).is_dir():
        raise PoseNASError(f"--target runs an exported subnet's model: {args.checkpoint} is not an export folder")
    if args.flip_test or (args.size and args.size != arch["resolution"]):
        raise PoseNASError(f"--target runs the deployed model as exported: at {arch['resolution']} px, without "
                           f"--flip-test")
    settings = RuntimeSettings.of(parse_target(args.target), "command line")
    return runtime_of(settings).inference(load_deployed(args.checkpoint, settings.precision), settings)


def refiner(args):
    """The completer of ``--refine``, else the one an export folder carries, else None."""
    from nas.pose.completion import Completion
    from nas.subnet.export import load_refiner

    if args.refine:
        return Completion.load(args.refine)
    return load_refiner(args.checkpoint) if Path(args.checkpoint).is_dir() else None


COMMANDS = [Eval, Predict]
