"""A `posenas` command: its words, its help, its flags beside its action (as in Optuna's CLI)."""
from __future__ import annotations

import argparse
import json


class Command:
    """Subclasses set ``name`` ("data synth": a group and a command, or one word) and implement
    ``add_arguments`` and ``take_action``; the class docstring's first line is the help text."""

    name = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def take_action(self, args: argparse.Namespace) -> None:
        raise NotImplementedError


def print_json_last(obj: dict) -> None:
    """With --json, the last line of output is the machine-readable record."""
    print(json.dumps(obj))


def given(args: argparse.Namespace, names) -> dict:
    """The flags among ``names`` that the user gave (None: not given, the setting's default holds)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
