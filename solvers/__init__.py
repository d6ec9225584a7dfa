"""Differentiable solver layers: batched CG, data consistency and a pixel-wise nonlinear signal fit,
both with implicit-differentiation backward.

A signal model is any differentiable callable ``q(p) -> y`` (``(B, P, Y, X)`` real ->
``(B, T, Y, X)``), optionally carrying ``bounds`` and a declaration of its linear amplitude
(``linear_parameters``, ``complex_amplitude``, ... — see :mod:`solvers.linear_amplitude`), which
``nonlinear_fit`` then solves in closed form; this package never imports ``simulation`` or
``pinqi``.
"""

from __future__ import annotations

from .cg import CGResult, cg
from .data_consistency import data_consistency
from .fit_info import FitInfo
from .linear_amplitude import LinearAmplitudeModel
from .nonlinear_fit import nonlinear_fit

__all__ = ["CGResult", "FitInfo", "LinearAmplitudeModel", "cg", "data_consistency", "nonlinear_fit"]
