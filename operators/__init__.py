"""MRI encoding operators: linear-operator algebra, centred orthonormal FFTs, coil sensitivities,
Cartesian sampling, NUFFT (torchkbnufft) and coil-map simulation/estimation.

Conventions (see DESIGN.md): image series ``(*b, T, Y, X)`` complex; coil maps ``(*b, C, Y, X)``;
Cartesian k-space ``(*b, T, C, Y, X)`` on the full grid with zeros where not sampled; the FFT is
centred (``ifftshift`` -> ``fftn(norm="ortho")`` -> ``fftshift``) and orthonormal.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "LinearOperator": "linear_operator",
    "AdjointOperator": "linear_operator",
    "ProductOperator": "linear_operator",
    "SumOperator": "linear_operator",
    "ScaledOperator": "linear_operator",
    "IdentityOperator": "linear_operator",
    "FFTOp": "fft",
    "MaskOp": "sampling_operator",
    "SensitivityOp": "sensitivity",
    "MultiCoilCartesianOp": "cartesian",
    "operator_norm": "norm",
    "NUFFTOp": "nufft",
    "MultiCoilNUFFTOp": "nufft",
    "variable_density_mask": "sampling",
    "radial_trajectory": "sampling",
    "simulate_coil_maps": "coil_maps",
    "estimate_coil_maps": "coil_maps",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
