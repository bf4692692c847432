"""`posenas arch sample|macs|presets`: arch configs, their cost, a space's presets."""
from __future__ import annotations

import json

from nas.app.cli.command import Command, print_json_last
from nas.app.cli.flags import COUNT, arch_flags, chosen_arch, cost_row


class Sample(Command):
    """write a preset or random arch config"""

    name = "arch sample"

    def add_arguments(self, p):
        arch_flags(p, file=False, random=True)
        p.add_argument("--out", help="write the config here (default: print it)")

    def take_action(self, args):
        from search_spaces import write_arch

        _, arch = chosen_arch(args)
        if args.out:
            write_arch(args.out, arch)
            print(f"wrote {args.out}")
        else:
            print(json.dumps(arch, indent=1))


class Macs(Command):
    """MACs and parameters of an arch config"""

    name = "arch macs"

    def add_arguments(self, p):
        arch_flags(p, random=True)
        p.add_argument("--json", action="store_true")

    def take_action(self, args):
        _, arch = chosen_arch(args)
        row = cost_row(arch, args.keypoints)
        print(f"{row['macs'] / 1e9:.3f} GMACs, {row['params'] / 1e6:.3f} M params at {row['resolution']} px "
              f"(arch {row['arch_hash']})")
        if args.json:
            print_json_last(row)


class Presets(Command):
    """list a space's presets with their cost"""

    name = "arch presets"

    def add_arguments(self, p):
        p.add_argument("--space", default="cpu", help="shipped space name (cpu, default, tiny) or YAML path")
        p.add_argument("--keypoints", type=COUNT, default=17, help="keypoints of the dataset (COCO: 17)")

    def take_action(self, args):
        from search_spaces import SearchSpace
        from search_spaces.presets import PUBLISHED

        space = SearchSpace.load(args.space)
        print(space.describe())
        if space.spec["presets"] == "compact":
            print("presets: compact: the published models' names on configs scaled to this space, far smaller than the "
                  "models (posenas arch presets --space default holds the models themselves)")
        for name in space.preset_names():
            preset = space.preset(name)
            row = cost_row(preset, args.keypoints)
            print(f"{name:16s} {row['resolution']:4d} px {row['macs'] / 1e9:8.3f} GMACs "
                  f"{row['params'] / 1e6:7.3f} M params")
            if name in PUBLISHED:  # the published model, and this preset at its input as a share of it
                model, size, gmacs, mparams = PUBLISHED[name]
                there = cost_row({**preset, "resolution": size}, args.keypoints)
                print(f"{'':16s} published {model} at {size} px: {gmacs:.3f} GMACs, {mparams:.2f} M params; "
                      f"this preset there: {there['macs'] / 1e9 / gmacs:.2f}x, {there['params'] / 1e6 / mparams:.2f}x")


COMMANDS = [Sample, Macs, Presets]
