"""Differentiable pixel-wise regularised nonlinear least squares (PINQI's nonlinear layer).

Solves, for every pixel independently,

    p* = argmin_p  F(p) = Σ_T |q(p) − y|² + Σ_P λ (p − p_reg)²

and back-propagates through ``p*`` by implicit differentiation.

Design choices
--------------
- **Bounds.** ``bounds=None`` means unbounded (pass ``bounds=q.bounds`` explicitly to use a signal
  model's bounds). Bounds are enforced by the smooth reparametrisation ``p = φ(z)`` of
  :mod:`solvers.bounds`; the solvers work on ``z``, and the returned ``p`` lies strictly inside.
- **Solvers.** ``solver="auto"`` (default) picks ``"varpro"`` for a model that declares a linear
  amplitude (:mod:`solvers.linear_amplitude`: ``q.linear_parameters``, e.g. complex M0 of the
  T1-mapping models, PD of the weighted models) and ``"lbfgs"`` otherwise, or when the unrolled
  backward (``implicit=False``) is asked for with gradients. ``"varpro"``
  (:mod:`solvers.varpro`) eliminates the amplitude in closed form and searches only the
  nonlinear parameters (global grid, then per-pixel Levenberg–Marquardt on the reduced problem);
  it keeps no absolute bound on the amplitude (only a sign bound at 0 of a real amplitude), so
  the fit is equivariant to the data's scale and phase. ``"lbfgs"`` / ``"gauss-newton"``
  (:mod:`solvers.pixel_solvers`) are general: every pixel has its own line search or damping,
  curvature memory and convergence test, and they honour every bound as given.
- **Implicit gradient** (:mod:`solvers.implicit_gradient`): taken in ``z``, where
  ``∇_z F(φ(z*)) = 0`` holds also for a pixel pushed towards a bound, with the exact per-pixel
  Hessian (``backward="hessian"``; pixels whose Hessian is singular, indefinite or non-finite get
  ``H + δ I``, counted in ``info.hessian_fallback_count`` and logged at INFO) or CG on
  Hessian-vector products (``"hvp-cg"``). Whatever solver found ``z*``, the backward is that of
  the full problem in every parameter. First order only.
- ``implicit=False`` differentiates through the unrolled iterations instead (the autograd graph
  of every step is kept; line-search decisions, step lengths, damping and the L-BFGS curvature
  memory are constants of that graph); ``"lbfgs"`` and ``"gauss-newton"`` only.
- The solvers take gradients of ``q`` internally. Under ``torch.inference_mode()`` the fit runs
  outside it on copies of ``y``, ``p_reg``, ``λ`` and ``p0``; tensors held by ``q`` must then
  not be inference tensors (build the model outside inference mode).
- Loggers are named after the modules (``solvers.nonlinear_fit``, ``solvers.implicit_gradient``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import torch

from solvers.bounds import BoxReparametrisation
from solvers.fit_info import FitInfo
from solvers.implicit_gradient import Backward, attach_implicit_gradient
from solvers.linear_amplitude import AmplitudeSpec
from solvers.pixel_solvers import PixelObjective, lbfgs_pixels, levenberg_marquardt_pixels
from solvers.varpro import varpro_pixels

__all__ = ["nonlinear_fit", "FitInfo", "Solver", "Backward"]

logger = logging.getLogger(__name__)

Solver = Literal["auto", "varpro", "lbfgs", "gauss-newton"]
Bounds = tuple[Sequence[float], Sequence[float]]
_SOLVERS = ("auto", "varpro", "lbfgs", "gauss-newton")
_BACKWARDS = ("hessian", "hvp-cg")


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


@overload
def nonlinear_fit(
    q: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    p_reg: torch.Tensor,
    lam: float | torch.Tensor,
    p0: torch.Tensor | None = ...,
    bounds: Bounds | None = ...,
    solver: Solver = ...,
    implicit: bool = ...,
    backward: Backward = ...,
    max_iter: int = ...,
    tol: float | None = ...,
    ftol: float | None = ...,
    history: int = ...,
    cg_tol: float | None = ...,
    cg_max_iter: int = ...,
    return_info: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def nonlinear_fit(
    q: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    p_reg: torch.Tensor,
    lam: float | torch.Tensor,
    p0: torch.Tensor | None = ...,
    bounds: Bounds | None = ...,
    solver: Solver = ...,
    implicit: bool = ...,
    backward: Backward = ...,
    max_iter: int = ...,
    tol: float | None = ...,
    ftol: float | None = ...,
    history: int = ...,
    cg_tol: float | None = ...,
    cg_max_iter: int = ...,
    *,
    return_info: Literal[True],
) -> tuple[torch.Tensor, FitInfo]: ...


def nonlinear_fit(
    q: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    p_reg: torch.Tensor,
    lam: float | torch.Tensor,
    p0: torch.Tensor | None = None,
    bounds: Bounds | None = None,
    solver: Solver = "auto",
    implicit: bool = True,
    backward: Backward = "hessian",
    max_iter: int = 50,
    tol: float | None = None,
    ftol: float | None = None,
    history: int = 10,
    cg_tol: float | None = None,
    cg_max_iter: int = 500,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, FitInfo]:
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
        ``"auto"`` (default: ``"varpro"`` for a model declaring a linear amplitude, else
        ``"lbfgs"``), ``"varpro"`` (amplitude in closed form, grid + reduced Levenberg–Marquardt),
        ``"lbfgs"`` (per-pixel L-BFGS, Armijo backtracking) or ``"gauss-newton"`` (per-pixel
        Levenberg–Marquardt).
    implicit
        Implicit-function-theorem backward (default) or, if False, autograd through the iterations.
    backward
        ``"hessian"`` (exact per-pixel Hessians) or ``"hvp-cg"`` (CG on Hessian-vector products).
    max_iter
        Maximum number of iterations (accepted steps + rejected trials for Gauss–Newton and for
        the refinement of ``"varpro"``).
    tol
        Per-pixel gradient tolerance ``max_k |∂F/∂z_k| <= tol · (1 + F)``; for ``"varpro"`` the
        scale-free step tolerance: the Gauss–Newton step in ``z`` ``<= tol · (1 + |z|)``. Default
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
        Also return a :class:`~solvers.fit_info.FitInfo` (per-pixel status, convergence,
        iterations, objective, gradient norm, evaluations, the solver used and the implicit
        backward's diagnostics; ``info["name"]`` reads work too).

    Returns
    -------
    p
        (B, P, Y, X), strictly inside the bounds (for ``"varpro"``: the bounds it keeps). With
        ``return_info``: ``(p, info)``.

    Raises
    ------
    ValueError
        Non-finite ``y``, ``p_reg``, ``lam`` or ``p0``; shapes that do not fit; an unknown
        ``solver`` / ``backward``; ``"varpro"`` for a model without a linear amplitude, or with
        ``implicit=False`` when gradients are needed.
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
    spec = AmplitudeSpec.from_model(q, n_par) if solver in ("auto", "varpro") else None
    if solver == "varpro" and spec is None:
        raise ValueError(
            "solver='varpro' needs a model that declares its linear amplitude (q.linear_parameters: one "
            "real amplitude, or (Re, Im) with q.complex_amplitude); use 'lbfgs' or 'gauss-newton'"
        )
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

    if solver == "auto":
        solver = "varpro" if spec is not None and (implicit or not needs_grad) else "lbfgs"
    if solver == "varpro" and needs_grad and not implicit:
        raise ValueError("solver='varpro' has the implicit backward only; pass implicit=True or another solver")

    def run(obj: PixelObjective, start: torch.Tensor, differentiable: bool) -> tuple[torch.Tensor, dict]:
        if solver == "lbfgs":
            return lbfgs_pixels(obj, start, max_iter, tol, ftol, history, differentiable=differentiable)
        return levenberg_marquardt_pixels(obj, start, max_iter, tol, ftol, differentiable=differentiable)

    if solver == "varpro":
        assert spec is not None
        lower_b, upper_b = (reparam.lower, reparam.upper)
        reparam = BoxReparametrisation(*spec.fit_bounds(lower_b, upper_b), p_reg.dtype, p_reg.device)
        with torch.no_grad():
            start = reparam.start_inside((p_reg if p0 is None else p0).detach())
            z_star, raw = varpro_pixels(q, y.detach(), p_reg.detach(), lam_t.detach(), spec, reparam, start, max_iter, tol)
    elif implicit or not needs_grad:
        obj = PixelObjective(q, y.detach(), p_reg.detach(), lam_t.detach(), reparam)
        with torch.no_grad():
            z_star, raw = run(obj, z0.detach(), False)
    else:
        obj = PixelObjective(q, y, p_reg, lam_t, reparam)
        z_star, raw = run(obj, z0, True)
    info = FitInfo(**raw, solver=solver)
    if needs_grad and (implicit or solver == "varpro"):
        full = PixelObjective(q, y, p_reg, lam_t, reparam)
        z_star = attach_implicit_gradient(full, z_star, backward, info, cg_tol, cg_max_iter)
    n_bad = int((~info.converged).sum())
    if n_bad:
        logger.info(
            "nonlinear_fit: %d of %d pixels stopped without meeting the tolerances (status counts %s)",
            n_bad,
            info.converged.numel(),
            torch.bincount(info.status.reshape(-1).long(), minlength=5).tolist(),
        )
    p = reparam.to_constrained(z_star)
    return (p, info) if return_info else p
