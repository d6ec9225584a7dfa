"""Helpers on ``nn.Module``: parameter counts."""

from __future__ import annotations

from torch import nn

__all__ = ["count_parameters"]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (only ``requires_grad`` ones with ``trainable_only``);
    works on the meta device."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
