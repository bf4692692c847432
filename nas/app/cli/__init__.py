"""The `posenas` command line. Every user error ends as one line on stderr and exit status 2.

Each command is a class beside its flags (``nas/app/cli/<group>.py``); this module only puts
them into one parser, in the order ``posenas --help`` lists them.
"""
from __future__ import annotations

import argparse
import os
import sys

from nas.app.cli import arch, completion, data, latency, pose, predictor, run, search, subnet, train, zoo
from nas.errors import PoseNASError
from search_spaces import SpaceError

GROUPS = {"data": "datasets: synthesize, check", "arch": "arch configs: sample, cost, presets",
          "latency": "measured latency and the latency predictor",
          "zoo": "trained supernets that ship: list, build",
          "predictor": "the accuracy predictor of a supernet",
          "completion": "joint refinement: fill in missing joints from the skeleton"}
COMMANDS = [*data.COMMANDS, *pose.COMMANDS, *completion.COMMANDS, *train.COMMANDS, *subnet.COMMANDS, *arch.COMMANDS,
            *latency.COMMANDS, *predictor.COMMANDS, *search.COMMANDS, *zoo.COMMANDS, *run.COMMANDS]


class Parser(argparse.ArgumentParser):
    """argparse with its errors as the one line every other error is (no usage block)."""

    def error(self, message: str):
        raise PoseNASError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="posenas", description=__doc__.splitlines()[0])
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for kind in COMMANDS:
        command = kind()
        *group, word = command.name.split()
        where = top
        if group:
            if group[0] not in groups:
                groups[group[0]] = top.add_parser(group[0], help=GROUPS[group[0]]).add_subparsers(
                    dest=f"{group[0]}_command", required=True)
            where = groups[group[0]]
        p = where.add_parser(word, help=kind.__doc__.strip().splitlines()[0])
        command.add_arguments(p)
        p.set_defaults(action=command.take_action)
    return parser


def free_cores(cores: int, load: float) -> int:
    """The cores other processes leave free (at least one)."""
    return max(1, int(cores - load + 0.5))


def use_free_cores(environ=os.environ) -> None:
    """Torch's threads on the free cores, unless OMP_NUM_THREADS says otherwise: on two cores with
    one kept busy, two threads ran the main job's training 3.3x slower than quiet (every op waits
    for the thread that shares a core) and one thread 1.4x; on a quiet machine a second thread
    gains under 10 %."""
    if "OMP_NUM_THREADS" not in environ and hasattr(os, "sched_getaffinity"):
        environ["OMP_NUM_THREADS"] = str(free_cores(len(os.sched_getaffinity(0)), os.getloadavg()[0]))


def main(argv: list[str] | None = None) -> int:
    use_free_cores()
    try:
        args = build_parser().parse_args(argv)
        args.action(args)
    except (PoseNASError, SpaceError) as e:
        print(f"posenas: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of the output left (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the disk is full, a folder is not writable: nothing is left half-written (nas.io)
        print(f"posenas: error: {f'{e.filename}: ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posenas: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
