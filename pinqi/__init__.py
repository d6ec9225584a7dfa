"""PINQI and W2Q models, networks, baselines, training, metrics and the command-line interface."""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "PINQI": "model",
    "PINQIConfig": "config",
    "MANTIS": "baselines.mantis",
    "DeepT1": "baselines.deept1",
    "W2Q": "w2q",
    "nrmse": "metrics",
    "mae": "metrics",
    "ssim": "metrics",
    "UNet": "networks",
    "ParameterNet": "networks",
    "ImageNet": "networks",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
