"""What :func:`solvers.nonlinear_fit` reports about a fit (``return_info=True``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch

from solvers.cg import CGResult

__all__ = ["FitInfo"]


@dataclass
class FitInfo:
    """Per-pixel outcome of one :func:`~solvers.nonlinear_fit` call.

    Attributes
    ----------
    status
        (B, Y, X) int8 per-pixel stop reason: 0 ``max_iter``, 1 gradient test (``"varpro"``: the
        relative step test), 2 objective change, 3 stalled, 4 non-finite start.
    converged
        (B, Y, X) bool: status 1 or 2.
    iterations
        (B, Y, X) long: accepted steps of each pixel (the refinement's, for ``"varpro"``).
    objective
        (B, Y, X) final ``F = Σ_T |q(p) − y|² + Σ_P λ (p − p_reg)²``.
    gradient_norm
        (B, Y, X) ``max_k |∂F/∂z_k|`` at the returned point.
    evaluations
        Full-image evaluations of ``q`` (a ``"varpro"`` grid on a spatially uniform model counts
        as one).
    solver
        The solver that ran (``"varpro"``, ``"lbfgs"`` or ``"gauss-newton"``; never ``"auto"``).
    hessian_fallback, hessian_fallback_count, hessian_damping
        With the ``"hessian"`` implicit backward: (B, Y, X) bool pixels whose Hessian needed
        damping, their number, and (B, Y, X) the damping ``δ`` used (0 elsewhere). None otherwise.
    backward_cg
        With the ``"hvp-cg"`` implicit backward: the backward CG result, filled in when backward
        has run; None otherwise.

    Notes
    -----
    Dict-style reading is kept for older callers: ``info["objective"]`` is ``info.objective``, and
    ``"hessian_fallback" in info`` is True only when that entry is set (not None).
    """

    status: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    objective: torch.Tensor
    gradient_norm: torch.Tensor
    evaluations: int
    solver: str = ""
    hessian_fallback: torch.Tensor | None = None
    hessian_fallback_count: int | None = None
    hessian_damping: torch.Tensor | None = None
    backward_cg: CGResult | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._names():
            raise KeyError(key)
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in self._names() and getattr(self, str(key)) is not None

    def keys(self) -> Iterator[str]:
        """Names of the entries that are set (not None)."""
        return (name for name in self._names() if getattr(self, name) is not None)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
