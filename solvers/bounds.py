"""Box constraints on parameter maps by smooth reparametrisation.

A bounded parameter ``p_k ∈ (l_k, u_k)`` is written as ``p_k = φ_k(z_k)`` of an unconstrained
variable ``z_k ∈ ℝ``, so that an unconstrained solver can work on ``z``:

=====================  ==================================  ===============================
bounds                 ``p = φ(z)``                        ``z = φ⁻¹(p)``
=====================  ==================================  ===============================
``(-inf, inf)``        ``z``                               ``p``
``(l, inf)``           ``l + softplus(z)``                 ``log(expm1(p - l))``
``(-inf, u)``          ``u - softplus(-z)``                ``-log(expm1(u - p))``
``(l, u)``             ``l + (u - l) · sigmoid(z)``        ``logit((p - l) / (u - l))``
=====================  ==================================  ===============================

``sigmoid(z) = (tanh(z / 2) + 1) / 2``, so the two-sided map is the tanh transform up to a
rescaling of ``z``; ``sigmoid`` is used because it is accurate in both tails. Every ``φ_k`` is
increasing. ``z`` is clamped to ``[-Z_MAX, Z_MAX]`` on the bounded side(s) of a parameter (where
``φ'`` is ``~e^{-Z_MAX}``, i.e. zero at any working precision) and the result is clamped to the
floating-point numbers strictly inside ``(l, u)``, so ``φ(z)`` lies strictly within the bounds
for every finite ``z``, even where the map saturates in single precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf

__all__ = ["BoxReparametrisation", "Z_MAX"]

Z_MAX = 50.0
_IDENTITY, _LOWER, _UPPER, _TWO_SIDED = 0, 1, 2, 3


def _as_floats(values: Sequence[float] | torch.Tensor, name: str) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.detach().reshape(-1).tolist()
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of floats; got {values!r}") from err
    return out


class BoxReparametrisation:
    """Per-parameter map ``p = φ(z)`` between unconstrained ``z`` and ``p`` inside the bounds.

    Parameters
    ----------
    lower, upper
        Sequences of ``P`` floats (``-inf`` / ``inf`` allowed), ``lower[k] < upper[k]``.
    dtype, device
        Real dtype and device of the maps the instance will be applied to.

    Notes
    -----
    The parameter axis is dimension 1: ``z`` and ``p`` have shape ``(B, P, ...)``.
    """

    def __init__(
        self,
        lower: Sequence[float] | torch.Tensor,
        upper: Sequence[float] | torch.Tensor,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        lo, up = _as_floats(lower, "lower bounds"), _as_floats(upper, "upper bounds")
        if len(lo) != len(up):
            raise ValueError(
                f"lower and upper bounds must have the same length P; got {len(lo)} and {len(up)}"
            )
        for k, (a, b) in enumerate(zip(lo, up)):
            if math.isnan(a) or math.isnan(b) or not a < b or a == math.inf or b == -math.inf:
                raise ValueError(
                    f"bounds of parameter {k} must satisfy lower < upper with lower < inf and "
                    f"upper > -inf; got ({a}, {b})"
                )
        self.lower, self.upper = lo, up
        self.dtype, self.device = dtype, device
        self.kinds = [
            (_LOWER if math.isfinite(a) else 0) + (_UPPER if math.isfinite(b) else 0) for a, b in zip(lo, up)
        ]
        # The floating-point numbers just inside each bound.
        self._inner_lo: list[float] = []
        self._inner_up: list[float] = []
        for a, b in zip(lo, up):
            ta = torch.nextafter(torch.tensor(a, dtype=dtype), torch.tensor(math.inf, dtype=dtype))
            tb = torch.nextafter(torch.tensor(b, dtype=dtype), torch.tensor(-math.inf, dtype=dtype))
            self._inner_lo.append(float(ta) if math.isfinite(a) else -math.inf)
            self._inner_up.append(float(tb) if math.isfinite(b) else math.inf)

    @classmethod
    def unbounded(cls, n_parameters: int, dtype: torch.dtype, device: torch.device | str | None = None):
        """The identity map for ``n_parameters`` unbounded parameters."""
        inf = [math.inf] * n_parameters
        return cls([-v for v in inf], inf, dtype=dtype, device=device)

    @property
    def n_parameters(self) -> int:
        """``P``."""
        return len(self.kinds)

    @property
    def is_identity(self) -> bool:
        """Whether no parameter is bounded."""
        return all(k == _IDENTITY for k in self.kinds)

    def clamp_z(self, z: torch.Tensor) -> torch.Tensor:
        """Clamp ``z`` (B, P, ...) to ``[-Z_MAX, Z_MAX]`` on the bounded side(s) of each parameter."""
        if self.is_identity:
            return z
        lo = [-Z_MAX if k & _LOWER else -math.inf for k in self.kinds]
        up = [Z_MAX if k & _UPPER else math.inf for k in self.kinds]
        shape = (1, len(lo)) + (1,) * (z.ndim - 2)
        lo_t = torch.tensor(lo, dtype=z.dtype, device=z.device).reshape(shape)
        up_t = torch.tensor(up, dtype=z.dtype, device=z.device).reshape(shape)
        return torch.clamp(z, lo_t, up_t)

    def to_constrained(self, z: torch.Tensor) -> torch.Tensor:
        """``p = φ(z)`` for ``z`` of shape (B, P, ...); differentiable; ``p`` strictly inside."""
        self._check(z, "z")
        if self.is_identity:
            return z
        z = self.clamp_z(z)
        cols = []
        for k, kind in enumerate(self.kinds):
            zk = z[:, k]
            a, b = self.lower[k], self.upper[k]
            if kind == _IDENTITY:
                cols.append(zk)
                continue
            if kind == _LOWER:
                pk = a + nnf.softplus(zk)
            elif kind == _UPPER:
                pk = b - nnf.softplus(-zk)
            else:
                pk = a + (b - a) * torch.sigmoid(zk)
            cols.append(torch.clamp(pk, self._inner_lo[k], self._inner_up[k]))
        return torch.stack(cols, dim=1)

    def to_unconstrained(self, p: torch.Tensor) -> torch.Tensor:
        """``z = φ⁻¹(p)`` for ``p`` of shape (B, P, ...), after clamping ``p`` just inside the bounds.

        Values on or beyond a bound map to the clamped end of the ``z`` range.
        """
        self._check(p, "p")
        if self.is_identity:
            return p
        tiny = torch.finfo(p.dtype).tiny
        eps = torch.finfo(p.dtype).eps
        cols = []
        for k, kind in enumerate(self.kinds):
            pk = p[:, k]
            a, b = self.lower[k], self.upper[k]
            if kind == _IDENTITY:
                cols.append(pk)
                continue
            if kind == _TWO_SIDED:
                frac = ((pk - a) / (b - a)).clamp(eps, 1 - eps)
                cols.append(torch.logit(frac))
                continue
            x = (pk - a) if kind == _LOWER else (b - pk)
            x = x.clamp_min(tiny)
            # log(expm1(x)) = x + log(1 - exp(-x)), stable for large and small x.
            zk = x + torch.log(-torch.expm1(-x))
            cols.append(zk if kind == _LOWER else -zk)
        return self.clamp_z(torch.stack(cols, dim=1))

    def start_inside(self, p: torch.Tensor, margin: float = 1e-3) -> torch.Tensor:
        """Clamp a starting point ``p`` (B, P, ...) away from the bounds, where ``φ`` saturates.

        Two-sided: into ``[l + m (u − l), u − m (u − l)]``; one-sided: ``m · max(1, |bound|)``
        away from the bound. A start in the saturated tail of ``φ`` would have a vanishing
        gradient in ``z`` and could not move.
        """
        self._check(p, "p")
        lo, up = [], []
        for a, b in zip(self.lower, self.upper):
            if math.isfinite(a) and math.isfinite(b):
                lo.append(a + margin * (b - a))
                up.append(b - margin * (b - a))
            else:
                lo.append(a + margin * max(1.0, abs(a)) if math.isfinite(a) else -math.inf)
                up.append(b - margin * max(1.0, abs(b)) if math.isfinite(b) else math.inf)
        shape = (1, self.n_parameters) + (1,) * (p.ndim - 2)
        lo_t = torch.tensor(lo, dtype=p.dtype, device=p.device).reshape(shape)
        up_t = torch.tensor(up, dtype=p.dtype, device=p.device).reshape(shape)
        return torch.clamp(p, lo_t, up_t)

    def clamp_inside(self, p: torch.Tensor) -> torch.Tensor:
        """Clamp ``p`` (B, P, ...) to the floating-point numbers strictly inside the bounds."""
        self._check(p, "p")
        shape = (1, self.n_parameters) + (1,) * (p.ndim - 2)
        lo = torch.tensor(self._inner_lo, dtype=p.dtype, device=p.device).reshape(shape)
        up = torch.tensor(self._inner_up, dtype=p.dtype, device=p.device).reshape(shape)
        return torch.clamp(p, lo, up)

    def contains(self, p: torch.Tensor) -> torch.Tensor:
        """Bool (B, P, ...): ``lower < p < upper`` elementwise."""
        self._check(p, "p")
        shape = (1, self.n_parameters) + (1,) * (p.ndim - 2)
        lo = torch.tensor(self.lower, dtype=p.dtype, device=p.device).reshape(shape)
        up = torch.tensor(self.upper, dtype=p.dtype, device=p.device).reshape(shape)
        return (p > lo) & (p < up)

    def _check(self, t: torch.Tensor, name: str) -> None:
        if t.ndim < 2 or t.shape[1] != self.n_parameters:
            raise ValueError(
                f"{name} must have shape (B, P, ...) with P = {self.n_parameters}; got {tuple(t.shape)}"
            )

    def __repr__(self) -> str:
        return f"BoxReparametrisation(lower={self.lower}, upper={self.upper})"
