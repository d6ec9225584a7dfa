"""Simulation: signal models, brain anatomy, tissue values, augmentation and synthetic datasets."""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "SaturationRecovery": "signal_models",
    "InversionRecovery": "signal_models",
    "SpinEcho": "signal_models",
    "FLAIR": "signal_models",
    "SpoiledGRE": "signal_models",
    "InversionPreparedGRE": "signal_models",
    "load_anatomy": "anatomy",
    "Anatomy": "anatomy",
    "download_brainweb": "brainweb",
    "T1MappingDataset": "t1_dataset",
    "WeightedImageDataset": "weighted_dataset",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
