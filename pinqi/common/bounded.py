"""Positive and bounded quantities from unconstrained ones: the inverse softplus, and the bounded
map of a network head.

A learnable positive strength λ is stored as λ̃ with λ = softplus_β(λ̃); :func:`inverse_softplus`
gives the λ̃ of an initial λ. A network head returns raw values ``r`` that :class:`BoundedMap`
sends into per-parameter bounds, on a linear or a logarithmic scale; it builds on
:class:`solvers.bounds.BoxReparametrisation` (the same maps the nonlinear fit uses) and adds the
logarithmic kind for parameters such as T1 and T2 that span decades.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from solvers.bounds import BoxReparametrisation

__all__ = ["inverse_softplus", "BoundedMap"]


def inverse_softplus(value: float, beta: float = 1.0) -> float:
    """The ``z`` with ``softplus_β(z) = log(1 + exp(β z)) / β = value``.

    Parameters
    ----------
    value
        A positive number.
    beta
        The softplus' sharpness β.
    """
    if not value > 0:
        raise ValueError(f"softplus only reaches positive values; got {value}")
    x = beta * value
    # log(expm1(x)), written as x + log(1 − e^{−x}) where expm1 would overflow
    return (math.log(math.expm1(x)) if x < 700.0 else x + math.log(-math.expm1(-x))) / beta


class BoundedMap(BoxReparametrisation):
    """Raw network output ``r`` ``(B, P, ...)`` -> maps inside per-parameter bounds, and back.

    Per parameter ``k`` with bounds ``(l, u)``: ``l + (u − l)·sigmoid(r)`` (both finite),
    ``l + softplus(r)`` (only ``l``), ``u − softplus(−r)`` (only ``u``), ``r`` (none); a parameter
    in ``log_scale`` (``0 < l < u < ∞``) is ``exp(ln l + ln(u / l)·sigmoid(r))``, i.e. uniform in
    ``ln p``. Unlike :meth:`~solvers.bounds.BoxReparametrisation.to_constrained` the forward map
    is not clamped: a network's raw output is finite, and saturation returns the bound itself.

    Parameters
    ----------
    lower, upper
        ``P`` floats each (``±inf`` allowed except on the log scale).
    log_scale
        Indices of the parameters mapped on a logarithmic scale.
    inverse_eps
        The inverse map clamps the position inside the bounds to ``[eps, 1 − eps]``.
    """

    def __init__(
        self,
        lower: Sequence[float],
        upper: Sequence[float],
        log_scale: Sequence[int] = (),
        inverse_eps: float = 1e-6,
    ) -> None:
        super().__init__(lower, upper, dtype=torch.float64)
        self.log_scale = tuple(sorted({int(k) for k in log_scale}))
        for k in self.log_scale:
            lo, hi = self.lower[k], self.upper[k]
            if not 0 < lo < hi < math.inf:
                raise ValueError(f"a log-scale parameter needs bounds 0 < lower < upper < inf; parameter {k} has ({lo}, {hi})")
        self.inverse_eps = float(inverse_eps)

    def _column(self, r: torch.Tensor, k: int) -> torch.Tensor:
        lo, hi = self.lower[k], self.upper[k]
        if k in self.log_scale:
            return torch.exp(math.log(lo) + math.log(hi / lo) * torch.sigmoid(r))
        if math.isfinite(lo) and math.isfinite(hi):
            return lo + (hi - lo) * torch.sigmoid(r)
        if math.isfinite(lo):
            return lo + F.softplus(r)
        if math.isfinite(hi):
            return hi - F.softplus(-r)
        return r

    def columns(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """The maps of every parameter, ``P`` tensors ``(B, ...)``."""
        return [self._column(raw[:, k], k) for k in range(self.n_parameters)]

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, P, ...)`` inside the bounds from raw values ``(B, P, ...)``."""
        return torch.stack(self.columns(raw), 1)

    def position(self, p: torch.Tensor, k: int) -> torch.Tensor:
        """Where ``p[:, k]`` lies between parameter ``k``'s finite bounds, in [0, 1] (log scale: of ln p)."""
        lo, hi = self.lower[k], self.upper[k]
        if k in self.log_scale:
            return (p[:, k].clamp_min(lo).log() - math.log(lo)) / math.log(hi / lo)
        return (p[:, k] - lo) / (hi - lo)

    def raw_value(self, value: float, k: int) -> float:
        """The raw ``r`` at which parameter ``k`` takes ``value`` (strictly inside its bounds)."""
        lo, hi = self.lower[k], self.upper[k]
        if not lo < value < hi:
            raise ValueError(f"initial value {value} of parameter {k} must lie strictly inside ({lo}, {hi})")
        if k in self.log_scale:
            fraction = (math.log(value) - math.log(lo)) / math.log(hi / lo)
            return math.log(fraction / (1 - fraction))
        if math.isfinite(lo) and math.isfinite(hi):
            fraction = (value - lo) / (hi - lo)
            return math.log(fraction / (1 - fraction))
        if math.isfinite(lo):
            return inverse_softplus(value - lo)
        if math.isfinite(hi):
            return -inverse_softplus(hi - value)
        return value

    def inverse(self, p: torch.Tensor) -> torch.Tensor:
        """Raw values ``(B, P, ...)`` of maps ``p`` with two-sided bounds (positions clamped by ``inverse_eps``)."""
        eps = self.inverse_eps
        return torch.logit(torch.stack([self.position(p, k) for k in range(self.n_parameters)], 1).clamp(eps, 1 - eps))
