"""PINQI and W2Q models, networks, baselines, training, metrics and the command-line interface.

Parameters of T1 mapping are ``(Re M0, Im M0, R1 [1/s])`` as in the PINQI paper; metrics are
reported on T1 = 1/R1 in seconds inside the brain mask. W2Q parameters are ``(PD, T1 [s], T2 [s])``.

Subpackages: :mod:`pinqi.common` (U-Net blocks, the training loop, checkpoints), :mod:`pinqi.w2q`,
:mod:`pinqi.baselines`, :mod:`pinqi.io` (raw data), :mod:`pinqi.cli` (the ``pinqi`` command).
"""

from __future__ import annotations

from .common.threads import prefer_passive_wait as _prefer_passive_wait

_prefer_passive_wait()  # before torch is imported: idle OpenMP threads sleep instead of spinning

from .baselines.deept1 import DeepT1
from .baselines.mantis import MANTIS
from .config import PINQIConfig
from .metrics import mae, nrmse, ssim
from .model import PINQI, PINQIOutput
from .networks import ImageNet, ParameterNet, UNet
from .training import load_pinqi
from .w2q import W2Q

__all__ = [
    "MANTIS",
    "PINQI",
    "W2Q",
    "DeepT1",
    "ImageNet",
    "PINQIConfig",
    "PINQIOutput",
    "ParameterNet",
    "UNet",
    "load_pinqi",
    "mae",
    "nrmse",
    "ssim",
]
