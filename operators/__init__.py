"""MRI encoding operators: linear-operator algebra, centred orthonormal FFTs, coil sensitivities,
Cartesian sampling, NUFFT and coil-map simulation/estimation.

Conventions (see DESIGN.md): image series ``(*b, T, Y, X)`` complex; coil maps ``(*b, C, Y, X)``;
Cartesian k-space ``(*b, T, C, Y, X)`` on the full grid with zeros where not sampled; the FFT is
centred (``ifftshift`` -> ``fftn(norm="ortho")`` -> ``fftshift``, see :mod:`operators.fft`) and
orthonormal. The NUFFT runs on finufft for CPU tensors and on the project's own Kaiser–Bessel
gridding otherwise (GPU tensors, or finufft not installed); :mod:`operators.nufft` gives the
measurements behind the choice.
"""

from __future__ import annotations

from .cartesian import MultiCoilCartesianOp
from .coil_maps import estimate_coil_maps, simulate_coil_maps
from .fft import FFTOp
from .linear_operator import (
    AdjointOperator,
    IdentityOperator,
    LinearOperator,
    ProductOperator,
    ScaledOperator,
    SumOperator,
)
from .norm import operator_norm
from .nufft import MultiCoilNUFFTOp, NUFFTOp
from .sampling import radial_trajectory, variable_density_mask, with_calibration_lines
from .sampling_operator import MaskOp
from .sensitivity import SensitivityOp

__all__ = [
    "AdjointOperator",
    "FFTOp",
    "IdentityOperator",
    "LinearOperator",
    "MaskOp",
    "MultiCoilCartesianOp",
    "MultiCoilNUFFTOp",
    "NUFFTOp",
    "ProductOperator",
    "ScaledOperator",
    "SensitivityOp",
    "SumOperator",
    "estimate_coil_maps",
    "operator_norm",
    "radial_trajectory",
    "simulate_coil_maps",
    "variable_density_mask",
    "with_calibration_lines",
]
