"""`posenas completion train|eval`: the joint-refinement network that fills in missing joints,
trained on skeletons alone, and how it does against the midpoint heuristic on real people."""
from __future__ import annotations

from nas.app.cli.command import Command, print_json_last
from nas.app.cli.flags import COUNT, INDEX, PART, SEED


class Train(Command):
    """train a skeleton completer on COCO-format skeletons and/or synthetic figures (no images)"""

    name = "completion train"

    def add_arguments(self, p):
        p.add_argument("--ann", nargs="*", default=[], help="COCO-format keypoint files whose people it learns from")
        p.add_argument("--synthetic", type=INDEX, default=20000,
                       help="synthetic figures besides them (COCO joints; 0: none)")
        p.add_argument("--steps", type=COUNT, default=3000)
        p.add_argument("--seed", type=SEED, default=0)
        p.add_argument("--out", required=True, help="folder for completion.safetensors and completion.json")

    def take_action(self, args):
        from nas.io import writer_lock
        from nas.pose.completion import train_completion, training_skeletons

        joints, known, spec = training_skeletons(args.ann, args.synthetic, args.seed)
        with writer_lock(args.out):
            card = train_completion(joints, known, spec, steps=args.steps, seed=args.seed, progress=True).save(args.out)
        print(f"skeleton completer for {spec.name} ({len(joints)} skeletons, {args.steps} steps): {args.out} "
              f"(sha256 {card['sha256'][:12]})")


class Eval(Command):
    """OKS of people with joints dropped and completed: the network against the midpoint heuristic"""

    name = "completion eval"

    def add_arguments(self, p):
        p.add_argument("completer", help="a folder written by `posenas completion train`")
        p.add_argument("--ann", required=True, help="COCO-format keypoint file of the people to complete")
        p.add_argument("--drop", type=PART, default=0.2, help="share of labelled joints removed (0-1)")
        p.add_argument("--draws", type=COUNT, default=5)
        p.add_argument("--json", action="store_true")

    def take_action(self, args):
        from nas.errors import PoseNASError
        from nas.pose.completion import Completion, coco_skeletons, judge
        from nas.pose.dataset import CocoPoseDataset

        completion = Completion.load(args.completer)
        ds = CocoPoseDataset(args.ann)
        if ds.spec.num_keypoints != completion.spec.num_keypoints:
            raise PoseNASError(f"{args.ann}: {ds.spec.name} people; the completer knows {completion.spec.name}")
        m = judge(completion, *coco_skeletons(ds), args.drop, args.draws)
        print(f"{m['people']} people, {args.drop:.0%} of labelled joints dropped: OKS {m['network']:.3f} completed "
              f"against {m['heuristic']:.3f} by the midpoint heuristic (dropped joints only: "
              f"{m['network_dropped']:.3f} against {m['heuristic_dropped']:.3f})")
        if args.json:
            print_json_last(m)


COMMANDS = [Train, Eval]
