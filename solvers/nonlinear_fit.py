"""Differentiable pixel-wise regularised nonlinear least squares (PINQI's nonlinear layer).

Solves, for every pixel independently,

    p* = argmin_p  F(p) = Σ_T |q(p) − y|² + Σ_P λ (p − p_reg)²

and back-propagates through ``p*`` by implicit differentiation.

Design choices
--------------
- **Bounds.** ``bounds=None`` means unbounded (pass ``bounds=q.bounds`` explicitly to use a signal
  model's bounds). Bounds are enforced by the smooth reparametrisation ``p = φ(z)`` of
  :mod:`solvers.bounds`; the solvers work on ``z``, and the returned ``p`` lies strictly inside.
- **Forward solvers** (:mod:`solvers.pixel_solvers`) are vectorised over pixels: every pixel has
  its own line search (``"lbfgs"``) or damping (``"gauss-newton"``, Levenberg–Marquardt), its own
  curvature memory and its own convergence test; converged pixels are frozen.
- **Where the implicit gradient is taken.** In ``z``: at the solution ``∇_z F(φ(z*)) = 0`` holds
  also for a pixel pushed towards a bound (where ``∇_p F = 0`` need not), so
  ``dz*/dθ = −H_z⁻¹ ∂²F/∂z∂θ`` with the exact Hessian ``H_z = ∂²F/∂z²`` (second-order terms of
  ``q`` included), and ``p* = φ(z*)`` is differentiated by the chain rule.
- **How.** The ``p* − S(r)`` trick: the output is ``z* + C(g)`` where ``g = ∇_z F(z*; θ)`` is built
  with autograd (so it depends on ``y``, ``p_reg``, ``λ`` and on *every* tensor ``q`` uses, without
  having to find them) and ``C`` is an autograd function whose value is zero and whose backward
  applies ``−H_z⁻¹``. ``backward="hessian"`` assembles ``H_z`` pixel by pixel (``P`` backward passes
  of ``Σ_pixels ∂F/∂z_k``, which by pixel separability yield every pixel's Hessian row ``k``) and
  factorises the ``P × P`` matrices at once. Pixels whose Hessian is singular, indefinite,
  non-finite or nearly singular (a Cholesky pivot ``<= 100 · eps · max diag``) get ``H + δ I``
  with ``δ`` escalated from ``1e3 · eps · max diag`` by ×10 until it passes; they are counted in ``info["hessian_fallback_count"]`` and logged (INFO,
  logger ``"solvers"``). ``backward="hvp-cg"`` instead runs :func:`solvers.cg.cg` on Hessian-vector
  products over the whole image (per batch sample), which does not assume pixel separability of
  ``F``'s curvature but has no per-pixel safeguard.
- The implicit backward is first-order only (double backward through it raises).
- ``implicit=False`` differentiates through the unrolled iterations instead (the autograd graph
  of every step is kept; line-search decisions, step lengths, damping and the L-BFGS curvature
  memory are constants of that graph).
- The solvers take gradients of ``q`` internally. Under ``torch.inference_mode()`` the fit runs
  outside it on copies of ``y``, ``p_reg``, ``λ`` and ``p0``; tensors held by ``q`` must then
  not be inference tensors (build the model outside inference mode).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from solvers.bounds import BoxReparametrisation
from solvers.cg import cg
from solvers.pixel_solvers import (
    PixelObjective,
    from_matrix_layout,
    lbfgs_pixels,
    levenberg_marquardt_pixels,
    small_cholesky,
    small_cholesky_solve,
    to_matrix_layout,
)

__all__ = ["nonlinear_fit"]

logger = logging.getLogger("solvers")

_SOLVERS = ("lbfgs", "gauss-newton")
_BACKWARDS = ("hessian", "hvp-cg")


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
    def forward(ctx: Any, g: torch.Tensor, hvp: Callable, tol: float, max_iter: int, info: dict) -> torch.Tensor:
        ctx.hvp, ctx.tol, ctx.max_iter, ctx.info = hvp, tol, max_iter, info
        return torch.zeros_like(g)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, v: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        res = cg(ctx.hvp, v, tol=ctx.tol, max_iter=ctx.max_iter)
        ctx.info["backward_cg"] = {
            "iterations": res.iterations,
            "converged": res.converged,
            "relative_residual": res.relative_residual,
        }
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


def _attach_implicit_gradient(
    obj: PixelObjective,
    z_star: torch.Tensor,
    backward: str,
    info: dict[str, Any],
    cg_tol: float,
    cg_max_iter: int,
) -> torch.Tensor:
    """Return ``z*`` (same value) carrying the implicit derivative with respect to the problem data."""
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
            info["hessian_fallback"] = fallback[:, 0]
            info["hessian_fallback_count"] = count
            info["hessian_damping"] = delta[:, 0]
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
            info["backward_cg"] = None

            def hvp(w: torch.Tensor) -> torch.Tensor:
                (out,) = torch.autograd.grad(g, z, grad_outputs=w, retain_graph=True)
                return out

            corr = _ApplyInverseHessianCG.apply(g, hvp, cg_tol, cg_max_iter, info)
        return z_star.detach() + corr


def _check_tensor(name: str, t: Any, shape_doc: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}; got {type(t).__name__}")
    if t.ndim != 4:
        raise ValueError(f"{name} must have shape {shape_doc}; got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{name} must be finite; got {int((~torch.isfinite(t.detach())).sum())} non-finite values")
    return t


def _normalise_lam(lam: Any, batch: int, n_par: int, spatial: tuple[int, int], p_reg: torch.Tensor) -> torch.Tensor:
    expected = "a float >= 0, a 0-d tensor, a (B,) tensor or a (B|1, 1|P, Y|1, X|1) tensor"
    if isinstance(lam, bool) or not isinstance(lam, (int, float, torch.Tensor)):
        raise TypeError(f"lam must be {expected}; got {type(lam).__name__}")
    if not isinstance(lam, torch.Tensor):
        lam_t = torch.tensor(float(lam), dtype=p_reg.dtype, device=p_reg.device)
    else:
        if lam.is_complex() or not lam.is_floating_point():
            raise TypeError(f"lam must be a real floating-point tensor; got dtype {lam.dtype}")
        lam_t = lam.to(dtype=p_reg.dtype, device=p_reg.device)
    full = (batch, n_par, *spatial)
    if lam_t.ndim == 1:
        if lam_t.shape[0] != batch:
            raise ValueError(f"lam must be {expected} with B = {batch}; got shape {tuple(lam_t.shape)}")
        lam_t = lam_t.reshape(batch, 1, 1, 1)
    elif lam_t.ndim == 4:
        if any(s not in (1, e) for s, e in zip(lam_t.shape, full)):
            raise ValueError(f"lam must be {expected} with (B, P, Y, X) = {full}; got shape {tuple(lam_t.shape)}")
    elif lam_t.ndim != 0:
        raise ValueError(f"lam must be {expected}; got shape {tuple(lam_t.shape)}")
    values = lam_t.detach()
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError(f"lam must be finite and >= 0; got min {float(values.min())}, max {float(values.max())}")
    return lam_t


def nonlinear_fit(
    q: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    p_reg: torch.Tensor,
    lam: float | torch.Tensor,
    p0: torch.Tensor | None = None,
    bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    solver: str = "lbfgs",
    implicit: bool = True,
    backward: str = "hessian",
    max_iter: int = 50,
    tol: float | None = None,
    ftol: float | None = None,
    history: int = 10,
    cg_tol: float | None = None,
    cg_max_iter: int = 500,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    """Pixel-wise ``argmin_p Σ_T |q(p) − y|² + λ Σ_P (p − p_reg)²``, differentiable.

    Parameters
    ----------
    q
        Pixel-separable signal model: ``q(p)`` maps (B, P, Y, X) real to (B, T, Y, X) real or
        complex. Gradients reach every tensor it uses that requires grad (e.g. saturation times).
    y
        (B, T, Y, X) data (complex parts count as a pair of reals: ``|r|² = Re² + Im²``).
    p_reg
        (B, P, Y, X) real prior; its dtype sets the working precision (``y`` must match it).
    lam
        Regularisation strength ``>= 0``: float, 0-d, (B,) or (B|1, 1|P, Y|1, X|1) tensor.
    p0
        (B, P, Y, X) warm start; default ``p_reg``. Clamped into the bounds with a margin of
        1e-3 of the range (see :meth:`~solvers.bounds.BoxReparametrisation.start_inside`).
    bounds
        ``(lower, upper)``, each ``P`` floats (``±inf`` allowed), or None (unbounded).
    solver
        ``"lbfgs"`` (per-pixel L-BFGS, Armijo backtracking) or ``"gauss-newton"`` (per-pixel
        Levenberg–Marquardt).
    implicit
        Implicit-function-theorem backward (default) or, if False, autograd through the iterations.
    backward
        ``"hessian"`` (exact per-pixel Hessians) or ``"hvp-cg"`` (CG on Hessian-vector products).
    max_iter
        Maximum number of iterations (accepted steps + rejected trials for Gauss–Newton).
    tol
        Per-pixel gradient tolerance ``max_k |∂F/∂z_k| <= tol · (1 + F)``; default
        ``max(1e-8, 100 eps)`` (1e-8 in float64, ~1.2e-5 in float32).
    ftol
        A pixel also stops when an accepted step decreases ``F`` by ``<= ftol · F``; default 0
        (off: this test caps the accuracy of ``p`` at ``~sqrt(ftol)``, while the gradient test
        and the stall detection reach working precision).
    history
        L-BFGS memory ``m`` (pairs per pixel).
    cg_tol, cg_max_iter
        Relative residual tolerance (default 1e-6 in float32, 1e-10 in float64) and iteration cap
        of the ``"hvp-cg"`` backward.
    return_info
        Also return a dict: ``status`` (B, Y, X) int8 (0 max_iter, 1 gradient test, 2 objective
        change, 3 stalled, 4 non-finite start), ``converged`` (B, Y, X), ``iterations`` (B, Y, X),
        ``objective`` (B, Y, X) final ``F``, ``gradient_norm`` (B, Y, X) ``max|∂F/∂z|``,
        ``evaluations`` (full-image evaluations of ``q``), and, when an implicit gradient was
        attached, ``hessian_fallback`` (B, Y, X) bool, ``hessian_fallback_count`` and
        ``hessian_damping`` (``"hessian"``), or ``backward_cg`` (``"hvp-cg"``; filled in by the
        backward pass).

    Returns
    -------
    p
        (B, P, Y, X), strictly inside the bounds. With ``return_info``: ``(p, info)``.
    """
    if torch.is_inference_mode_enabled():
        # The solvers differentiate q internally: leave inference mode, on ordinary copies.
        def plain(t: Any) -> Any:
            return t.clone() if isinstance(t, torch.Tensor) else t

        with torch.inference_mode(False), torch.no_grad():
            return nonlinear_fit(
                q, plain(y), plain(p_reg), plain(lam), plain(p0), bounds, solver, implicit, backward, max_iter,
                tol, ftol, history, cg_tol, cg_max_iter, return_info,
            )
    if not callable(q):
        raise TypeError(f"q must be a callable p (B, P, Y, X) -> (B, T, Y, X); got {type(q).__name__}")
    y = _check_tensor("y", y, "(B, T, Y, X)")
    p_reg = _check_tensor("p_reg", p_reg, "(B, P, Y, X)")
    if p_reg.is_complex() or not p_reg.is_floating_point():
        raise TypeError(f"p_reg must be a real floating-point tensor; got dtype {p_reg.dtype}")
    if not (y.is_complex() or y.is_floating_point()):
        raise TypeError(f"y must be a real or complex floating-point tensor; got dtype {y.dtype}")
    batch, n_par, ny, nx = p_reg.shape
    if y.shape[0] != batch or tuple(y.shape[2:]) != (ny, nx):
        raise ValueError(
            f"y must have shape (B, T, Y, X) with B, Y, X = {(batch, ny, nx)} of p_reg; got {tuple(y.shape)}"
        )
    y_real = y.real.dtype if y.is_complex() else y.dtype
    if y_real != p_reg.dtype or y.device != p_reg.device:
        raise ValueError(
            f"y must have the precision and device of p_reg ({p_reg.dtype}, {p_reg.device}); "
            f"got {y.dtype}, {y.device}"
        )
    lam_t = _normalise_lam(lam, batch, n_par, (ny, nx), p_reg)
    if p0 is not None:
        p0 = _check_tensor("p0", p0, "(B, P, Y, X)")
        if p0.shape != p_reg.shape or p0.dtype != p_reg.dtype:
            raise ValueError(
                f"p0 must have the shape and dtype of p_reg, {tuple(p_reg.shape)} {p_reg.dtype}; "
                f"got {tuple(p0.shape)} {p0.dtype}"
            )
    if bounds is None:
        reparam = BoxReparametrisation.unbounded(n_par, p_reg.dtype, p_reg.device)
    else:
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise ValueError(f"bounds must be (lower, upper) or None; got {bounds!r}")
        lower, upper = bounds
        reparam = BoxReparametrisation(lower, upper, p_reg.dtype, p_reg.device)
        if reparam.n_parameters != n_par:
            raise ValueError(
                f"bounds must give P = {n_par} values each (P of p_reg); got {reparam.n_parameters}"
            )
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}; got {solver!r}")
    if backward not in _BACKWARDS:
        raise ValueError(f"backward must be one of {_BACKWARDS}; got {backward!r}")
    for name, value, low in (("max_iter", max_iter, 0), ("history", history, 1), ("cg_max_iter", cg_max_iter, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    eps = torch.finfo(p_reg.dtype).eps
    tol = max(1e-8, 100 * eps) if tol is None else tol
    ftol = 0.0 if ftol is None else ftol
    cg_tol = (1e-10 if p_reg.dtype == torch.float64 else 1e-6) if cg_tol is None else cg_tol
    for name, value in (("tol", tol), ("ftol", ftol), ("cg_tol", cg_tol)):
        if not isinstance(value, (int, float)) or not (0 <= value < math.inf):
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")

    grad_on = torch.is_grad_enabled()
    p_start = reparam.start_inside(p_reg if p0 is None else p0)
    z0 = reparam.to_unconstrained(p_start if (grad_on and not implicit) else p_start.detach())
    with torch.set_grad_enabled(grad_on):
        probe = q(reparam.to_constrained(z0.detach()))
    if not isinstance(probe, torch.Tensor) or probe.shape != y.shape:
        got = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise ValueError(f"q(p) must return a tensor of the shape of y, {tuple(y.shape)}; got {got}")
    needs_grad = grad_on and (y.requires_grad or p_reg.requires_grad or lam_t.requires_grad or probe.requires_grad)
    del probe

    def run(obj: PixelObjective, start: torch.Tensor, differentiable: bool) -> tuple[torch.Tensor, dict]:
        if solver == "lbfgs":
            return lbfgs_pixels(obj, start, max_iter, tol, ftol, history, differentiable=differentiable)
        return levenberg_marquardt_pixels(obj, start, max_iter, tol, ftol, differentiable=differentiable)

    if implicit or not needs_grad:
        obj = PixelObjective(q, y.detach(), p_reg.detach(), lam_t.detach(), reparam)
        with torch.no_grad():
            z_star, info = run(obj, z0.detach(), False)
        if needs_grad:
            full = PixelObjective(q, y, p_reg, lam_t, reparam)
            z_star = _attach_implicit_gradient(full, z_star, backward, info, cg_tol, cg_max_iter)
    else:
        obj = PixelObjective(q, y, p_reg, lam_t, reparam)
        z_star, info = run(obj, z0, True)
    n_bad = int((~info["converged"]).sum())
    if n_bad:
        logger.info(
            "nonlinear_fit: %d of %d pixels stopped without meeting the tolerances (status counts %s)",
            n_bad,
            info["converged"].numel(),
            torch.bincount(info["status"].reshape(-1).long(), minlength=5).tolist(),
        )
    info["solver"] = solver
    p = reparam.to_constrained(z_star)
    return (p, info) if return_info else p
