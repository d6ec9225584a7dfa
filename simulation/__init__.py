"""Simulation: signal models, brain anatomy, tissue values, augmentation and synthetic datasets.

Times are in seconds, flip angles in degrees. The default anatomy is the offline MNI ICBM152
2009a template shipped in nilearn's package data (see NOTICE); BrainWeb is downloaded on request.
"""

from __future__ import annotations

from .anatomy import Anatomy, load_anatomy
from .brainweb import download_brainweb
from .mprage import MPRAGE
from .signal_models import (
    FLAIR,
    InversionPreparedGRE,
    InversionRecovery,
    SaturationRecovery,
    SpinEcho,
    SpoiledGRE,
)
from .t1_dataset import T1MappingDataset
from .weighted_dataset import WeightedImageDataset

__all__ = [
    "FLAIR",
    "Anatomy",
    "InversionPreparedGRE",
    "InversionRecovery",
    "MPRAGE",
    "SaturationRecovery",
    "SpinEcho",
    "SpoiledGRE",
    "T1MappingDataset",
    "WeightedImageDataset",
    "download_brainweb",
    "load_anatomy",
]
