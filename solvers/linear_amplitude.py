"""Signal models whose amplitude enters linearly, and the closed-form (ridge) amplitude.

A signal model is just a differentiable callable ``q(p)`` to this package. It may declare, with
plain attributes (no import of this module needed), that part of ``p`` enters linearly:

``linear_parameters: tuple[int, ...]``
    Indices (into ``p``'s dim 1) of the parameters that enter linearly. Either one index — a
    real amplitude ``a``: ``q(p) = a · g(θ)`` — or two indices with ``complex_amplitude``.
``complex_amplitude: bool``
    ``linear_parameters = (i_re, i_im)`` are the real and imaginary part of one complex
    amplitude: ``q(p) = (p_re + i p_im) · g(θ)`` (``g`` real or complex).
``nonnegative_amplitude: bool``
    The real amplitude enters linearly only for ``a >= 0`` (e.g. a magnitude image
    ``|a · g| = a · |g|``): the amplitude is then constrained to ``a >= 0``.
``spatially_uniform: bool``
    Equal parameters give equal signals at every pixel of a sample (no per-pixel state in
    ``q``): ``q`` may then be evaluated on a ``(B, P, 1, G)`` map of ``G`` grid values.

``θ`` are the remaining (nonlinear) parameters, ``g(θ) = q(p)`` at unit amplitude. For fixed
``θ`` the amplitude minimising ``Σ_T |a g − y|² + Σ_l λ_l (a_l − ā_l)²`` is, per component,

    a_l = (c_l + λ_l ā_l) / (n + λ_l),   n = Σ_T |g|²,   c = Σ_T conj(g) y

with ``c_0 = Re c``, ``c_1 = Im c`` for a complex amplitude (the two real columns ``g`` and
``i g`` are orthogonal, so the normal matrix is ``n I + diag(λ)``) and ``c_0 = Re c`` for a
real one (clamped at 0 where it must be non-negative, which is the exact constrained minimiser
of that one-dimensional convex quadratic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["LinearAmplitudeModel", "AmplitudeSpec", "ridge_amplitude"]


@runtime_checkable
class LinearAmplitudeModel(Protocol):
    """Structural type of a signal model that declares a linear amplitude (module docstring)."""

    linear_parameters: tuple[int, ...]
    complex_amplitude: bool

    def __call__(self, p: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class AmplitudeSpec:
    """What a model declares about its linear amplitude, validated against ``P``.

    Attributes
    ----------
    linear
        Indices of the amplitude parameters (1 real, or 2 = (Re, Im) of a complex amplitude).
    nonlinear
        Indices of the other parameters ``θ``, in increasing order.
    complex
        Whether ``linear`` is (Re, Im) of one complex amplitude.
    nonnegative
        Whether the (real) amplitude must be ``>= 0``.
    uniform
        Whether the model may be evaluated on a ``(B, P, 1, G)`` grid map (spatially uniform).
    """

    linear: tuple[int, ...]
    nonlinear: tuple[int, ...]
    complex: bool
    nonnegative: bool
    uniform: bool

    @classmethod
    def from_model(cls, q: Any, n_par: int) -> AmplitudeSpec | None:
        """Read the declaration of ``q`` for ``P = n_par`` parameters; None if there is none.

        Raises ``ValueError`` for a declaration that does not fit ``P`` (out-of-range or repeated
        indices, a complex amplitude without two indices). A model with more than one real linear
        parameter is not supported here and returns None (the general solvers handle it).
        """
        raw = getattr(q, "linear_parameters", ())
        if raw is None or len(raw) == 0:
            return None
        try:
            linear = tuple(int(i) for i in raw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"q.linear_parameters must be a tuple of parameter indices; got {raw!r}") from err
        if len(set(linear)) != len(linear) or any(not 0 <= i < n_par for i in linear):
            raise ValueError(f"q.linear_parameters must be distinct indices in [0, {n_par}); got {linear}")
        is_complex = bool(getattr(q, "complex_amplitude", False))
        if is_complex and len(linear) != 2:
            raise ValueError(f"a complex amplitude needs two linear_parameters (Re, Im); got {linear}")
        if not is_complex and len(linear) != 1:
            return None
        nonneg = bool(getattr(q, "nonnegative_amplitude", False))
        if nonneg and is_complex:
            raise ValueError("nonnegative_amplitude applies to a real amplitude, not to a complex one")
        nonlinear = tuple(i for i in range(n_par) if i not in linear)
        return cls(linear, nonlinear, is_complex, nonneg, bool(getattr(q, "spatially_uniform", False)))

    def fit_bounds(
        self, lower: Sequence[float], upper: Sequence[float]
    ) -> tuple[list[float], list[float]]:
        """Bounds the variable-projection fit keeps: ``θ``'s as given; for the amplitude only a
        bound at 0 (a sign, which is scale-free) of a real amplitude — any other amplitude bound
        would be absolute, i.e. depend on the data's scale, and is dropped. A non-negative
        amplitude always gets the lower bound 0."""
        lo, up = [float(v) for v in lower], [float(v) for v in upper]
        for i in self.linear:
            keep_lo = not self.complex and (lo[i] == 0.0 or self.nonnegative)
            keep_up = not self.complex and up[i] == 0.0 and not self.nonnegative
            lo[i] = 0.0 if keep_lo else -math.inf
            up[i] = 0.0 if keep_up else math.inf
        return lo, up

    def sign(self, lower: Sequence[float], upper: Sequence[float]) -> int:
        """+1 / −1 if the real amplitude is confined to ``>= 0`` / ``<= 0`` by ``fit_bounds``, else 0."""
        lo, up = self.fit_bounds(lower, upper)
        i = self.linear[0]
        return 1 if lo[i] == 0.0 else (-1 if up[i] == 0.0 else 0)


def ridge_amplitude(
    c: torch.Tensor, n: torch.Tensor, lam: list[torch.Tensor | None], a_reg: list[torch.Tensor], sign: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Closed-form amplitude and the part of the objective it leaves.

    Parameters
    ----------
    c
        ``Σ_T conj(g) y``: complex for a complex amplitude, real for a real one; any shape ``S``.
    n
        ``Σ_T |g|²``, real, broadcastable to ``S``.
    lam, a_reg
        One tensor per amplitude component (broadcastable to ``S``): ``λ_l >= 0`` (None: 0) and
        ``ā_l``.
    sign
        +1 / −1 to confine a real amplitude to ``>= 0`` / ``<= 0``; 0 for none.

    Returns
    -------
    a
        List of amplitude components (shape ``S``).
    phi
        ``Σ_l [(n + λ_l) a_l² − 2 a_l (c_l + λ_l ā_l)]`` (shape ``S``), i.e. the objective at
        ``a`` minus the ``a``-independent ``Σ_T |y|² + Σ_l λ_l ā_l²``.
    """
    parts = [c.real, c.imag] if c.is_complex() else [c]
    a_out: list[torch.Tensor] = []
    phi = torch.zeros((), dtype=parts[0].dtype, device=parts[0].device)
    for c_l, lam_l, reg_l in zip(parts, lam, a_reg):
        den = n if lam_l is None else n + lam_l
        num = c_l if lam_l is None else c_l + lam_l * reg_l
        ok = den > 0
        a_l = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))
        if sign == 0:
            phi = phi - num * a_l  # (den a − 2 num) a with a = num / den
        else:
            a_l = a_l.clamp_min(0) if sign > 0 else a_l.clamp_max(0)
            phi = phi + (den * a_l - 2 * num) * a_l
        a_out.append(a_l)
    return a_out, phi
