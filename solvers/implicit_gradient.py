"""Implicit-function-theorem gradient of a pixel-wise fit at its solution.

At a solution ``z*`` of ``∇_z F(z; θ) = 0`` (``θ`` = the data ``y``, ``p_reg``, ``λ`` and every
tensor the model uses), ``dz*/dθ = −H_z⁻¹ ∂²F/∂z∂θ``. :func:`attach_implicit_gradient` returns
``z* + C(g)`` where ``g = ∇_z F(z*; θ)`` is built with autograd (so it depends on everything ``F``
depends on, without having to find it) and ``C`` is an autograd function whose value is zero and
whose backward applies ``−H_z⁻¹`` — by per-pixel Cholesky factors of the exact Hessian
(``"hessian"``, with a damped fallback for pixels whose Hessian is not safely positive definite)
or by CG on Hessian-vector products over each sample (``"hvp-cg"``). First order only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.autograd.function import once_differentiable

from solvers.cg import cg
from solvers.fit_info import FitInfo
from solvers.pixel_solvers import PixelObjective
from solvers.small_matrices import from_matrix_layout, small_cholesky, small_cholesky_solve, to_matrix_layout

__all__ = ["attach_implicit_gradient", "Backward"]

logger = logging.getLogger(__name__)

Backward = Literal["hessian", "hvp-cg"]


class _ApplyInverseHessian(torch.autograd.Function):
    """Value 0; backward ``v -> −H⁻¹ v`` with per-pixel Cholesky factors ``L`` (P, P, B, 1, Y, X)."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(lower)
        return torch.zeros_like(g)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, v: torch.Tensor) -> tuple[torch.Tensor, None]:
        (lower,) = ctx.saved_tensors
        return -from_matrix_layout(small_cholesky_solve(lower, to_matrix_layout(v))), None


class _ApplyInverseHessianCG(torch.autograd.Function):
    """Value 0; backward ``v -> −H⁻¹ v`` by CG on Hessian-vector products over each sample."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, hvp: Callable, tol: float, max_iter: int, info: FitInfo) -> torch.Tensor:
        ctx.hvp, ctx.tol, ctx.max_iter, ctx.info = hvp, tol, max_iter, info
        return torch.zeros_like(g)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, v: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        res = cg(ctx.hvp, v, tol=ctx.tol, max_iter=ctx.max_iter, check_finite=False)
        ctx.info.backward_cg = res
        if not bool(res.converged.all()):
            logger.warning(
                "nonlinear_fit: backward CG did not converge for %d of %d samples (relative residual up to %.3g)",
                int((~res.converged).sum()),
                res.converged.numel(),
                float(res.relative_residual.max()),
            )
        return -res.x, None, None, None, None


def _factor_with_fallback(h: torch.Tensor, rcond: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cholesky of per-pixel Hessians (P, P, *S), damping the ones that are not safely SPD.

    Returns the factors, the fallback mask (*S) and the damping ``δ`` used (*S, 0 where none).
    """
    n = h.shape[0]
    eye = torch.eye(n, dtype=h.dtype, device=h.device).reshape(n, n, *([1] * (h.ndim - 2)))
    finite = torch.isfinite(h).all(0).all(0)
    h = torch.where(finite, h, eye)
    lower, ok = small_cholesky(h, rcond)
    fallback = ~ok
    diag_max = torch.stack([h[i, i] for i in range(n)]).abs().amax(0)
    level = 10 * rcond * torch.where(diag_max > 0, diag_max, torch.ones_like(diag_max))
    delta = torch.zeros_like(diag_max)
    for _ in range(60):
        need = ~ok
        if not bool(need.any()):
            break
        delta = torch.where(need, torch.where(delta > 0, 10 * delta, level), delta)
        l2, ok2 = small_cholesky(h + delta * eye, rcond)
        lower = torch.where(need & ok2, l2, lower)
        ok = ok | ok2
    lower = torch.where(ok, lower, eye)  # unreachable for finite input; keeps the result finite
    return lower, fallback, delta


def attach_implicit_gradient(
    obj: PixelObjective,
    z_star: torch.Tensor,
    backward: Backward,
    info: FitInfo,
    cg_tol: float,
    cg_max_iter: int,
) -> torch.Tensor:
    """Return ``z*`` (B, P, Y, X), same value, carrying the implicit derivative with respect to the
    problem data of ``obj``; records the Hessian fallback (or, later, the backward CG) in ``info``."""
    n_par = z_star.shape[1]
    z = z_star.detach().requires_grad_(True)
    with torch.enable_grad():
        f = obj.per_pixel(z).sum()
        (g,) = torch.autograd.grad(f, z, create_graph=True)
        if backward == "hessian":
            rows = []
            for k in range(n_par):
                (row,) = torch.autograd.grad(g[:, k].sum(), z, retain_graph=True, allow_unused=True)
                rows.append(to_matrix_layout(torch.zeros_like(z) if row is None else row))
            h = torch.stack(rows)
            h = 0.5 * (h + h.transpose(0, 1))
            rcond = 100 * torch.finfo(h.dtype).eps
            lower, fallback, delta = _factor_with_fallback(h, rcond)
            count = int(fallback.sum())
            info.hessian_fallback = fallback[:, 0]
            info.hessian_fallback_count = count
            info.hessian_damping = delta[:, 0]
            if count:
                logger.info(
                    "nonlinear_fit: %d of %d pixels have a singular, indefinite or non-finite Hessian; "
                    "solved with H + δI instead (δ up to %.3g)",
                    count,
                    fallback.numel(),
                    float(delta.max()),
                )
            corr = _ApplyInverseHessian.apply(g, lower)
        else:

            def hvp(w: torch.Tensor) -> torch.Tensor:
                (out,) = torch.autograd.grad(g, z, grad_outputs=w, retain_graph=True)
                return out

            corr = _ApplyInverseHessianCG.apply(g, hvp, cg_tol, cg_max_iter, info)
        return z_star.detach() + corr
