"""Heads: one class per head type, each owning its modules on the pose network and its cost.

A head type named ``X`` (``search_spaces.space.HEAD_TYPES``) lives in ``supernet/heads/X.py`` as
``HEAD``; its targets, loss and decoding live in its codec, ``nas/pose/codecs/X.py`` (the pose
engine sits above the network, so the two halves of a head split as mmpose's heads and codecs
do). Nothing outside a head's own modules compares its name: everything else asks the head.
"""
from __future__ import annotations

import importlib
from functools import cache

import torch
from torch import nn

from search_spaces.space import head_type


class Head:
    """A head type: the modules it adds to a ``supernet.network.PoseNet`` (under fixed attribute
    names, so that state dicts keep their keys), switching them to a subnet, their forward pass
    and their cost."""

    name: str
    modules: tuple[str, ...]  # the network attributes it owns (top-level state-dict names)

    def build(self, net: nn.Module, arch: dict, features: int, styles: tuple[str, ...]) -> None:
        """Add this head's modules to ``net`` (its largest ``arch``), reading ``features`` stride-4
        channels; ``styles``: the head styles the network holds."""
        raise NotImplementedError

    def set_active(self, net: nn.Module, arch: dict) -> None:
        raise NotImplementedError

    def forward(self, net: nn.Module, y: torch.Tensor, stem: torch.Tensor, classifiers: torch.Tensor | None,
                seeds: torch.Tensor | None) -> list[torch.Tensor]:
        """The head's outputs from the stride-4 features ``y`` (``stem``: the stride-2 stem
        features; ``classifiers``: the token stage's keypoint classifiers, or None; ``seeds``:
        training positions of extra queries)."""
        raise NotImplementedError

    def cost(self, c, arch: dict, num_keypoints: int, features: int, sides: list[int], side: int) -> None:
        """Add this head's work to ``c`` (a ``supernet.cost.Cost``): ``features`` channels at
        ``sides[0]`` (stride 4), ``side`` the stride-2 side."""
        raise NotImplementedError

    def keypoints_in(self, state_dict: dict[str, torch.Tensor]) -> int:
        """How many keypoints a network of this head with these weights detects."""
        raise NotImplementedError

    def when_opened(self, net: nn.Module) -> None:
        """Called once when training first lets subnets choose their head type."""


@cache
def head_named(name: str) -> Head:
    return importlib.import_module(f"supernet.heads.{name}").HEAD


def head_of(arch: dict) -> Head:
    """The head of an arch config."""
    return head_named(head_type(arch))
