"""Differentiable solver layers: batched CG, data consistency and a pixel-wise nonlinear signal fit,
both with implicit-differentiation backward. A signal model is any differentiable callable
``q(p) -> y``, optionally carrying ``bounds``; this package never imports ``simulation`` or ``pinqi``."""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "cg": "cg",
    "CGResult": "cg",
    "data_consistency": "data_consistency",
    "nonlinear_fit": "nonlinear_fit",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
