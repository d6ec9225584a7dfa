"""Seeded construction without touching the global RNG."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["seeded"]

T = TypeVar("T")


def seeded(seed: int, build: Callable[[], T]) -> T:
    """``build()`` with the CPU RNG seeded by ``seed`` inside :func:`torch.random.fork_rng`: the
    result (e.g. a network's initial weights) depends on ``seed`` only, and the global RNG is left
    as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
