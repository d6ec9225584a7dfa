"""Comparison methods for T1 mapping: the learned baselines MANTIS and DeepT1, and classical
pipelines (zero-filled or CG-SENSE images followed by a pixel-wise signal fit).

Names are imported lazily, so importing this package does not import torch operators until used.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "MANTIS": "mantis",
    "mantis_loss": "mantis",
    "mantis_kspace_loss": "mantis",
    "mantis_train_step": "mantis",
    "DeepT1": "deept1",
    "CRNN": "deept1",
    "deept1_image_loss": "deept1",
    "deept1_map_loss": "deept1",
    "deept1_train_step": "deept1",
    "ClassicalResult": "classical",
    "zero_filled_fit": "classical",
    "cg_sense": "classical",
    "cg_sense_fit": "classical",
    "grid_initial_value": "classical",
    "pixelwise_fit": "classical",
    "MapUNet": "common",
    "coil_combine": "common",
    "magnitude_scale": "common",
    "reference_phase": "common",
    "params_to_magnitude": "common",
    "magnitude_to_params": "common",
    "r1_to_t1": "common",
    "t1_to_r1": "common",
    "weighted_map_mse": "common",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
