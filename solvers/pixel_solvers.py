"""Vectorised per-pixel minimisers for pixel-separable objectives.

A *pixel* is one index ``(b, y, x)`` of a parameter map ``z`` of shape ``(B, P, Y, X)``; the
objective is a sum of independent per-pixel terms, so every pixel is its own small problem in
``P`` unknowns. The solvers below run all those problems at once: each step evaluates the
objective on the whole image, but every pixel has its own step length or damping, its own
curvature memory and its own stopping test, and a pixel that has stopped is frozen. Per-pixel
scalars are kept as ``(B, 1, Y, X)`` tensors; per-pixel ``P × P`` matrices as ``(P, P, B, 1, Y, X)``.

``differentiable=True`` keeps the autograd graph of the iterations (all updates out of place);
accept/reject decisions and step lengths are then constants of that graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from solvers.bounds import BoxReparametrisation
from solvers.small_matrices import from_matrix_layout, small_cholesky, small_cholesky_solve, to_matrix_layout

__all__ = ["PixelObjective", "lbfgs_pixels", "levenberg_marquardt_pixels", "small_cholesky", "small_cholesky_solve",
           "to_matrix_layout", "from_matrix_layout", "sum_abs2", "STATUS"]

# Per-pixel termination codes reported in ``info["status"]``.
STATUS = {"max_iter": 0, "gradient": 1, "objective_change": 2, "stalled": 3, "nonfinite": 4}


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel inner product over the parameter axis: (B, P, ...) x2 -> (B, 1, ...)."""
    return (a * b).sum(1, keepdim=True)


class _SumAbs2(torch.autograd.Function):
    """``Σ_T |r|²`` over dim 1 (keepdim), with a cheap backward ``2 r · grad`` (twice differentiable).

    Autograd's own backward of ``view_as_real(r).square().sum(...)`` reduces over the trailing
    size-2 axis, which is several times slower than the whole forward pass on the CPU.
    """

    @staticmethod
    def forward(ctx: Any, r: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(r)
        if r.is_complex():
            return (r.real.square() + r.imag.square()).sum(1, keepdim=True)
        return r.square().sum(1, keepdim=True)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return 2 * grad * r


def sum_abs2(r: torch.Tensor) -> torch.Tensor:
    """``Σ_T |r|²`` per pixel: (B, T, Y, X) real or complex -> (B, 1, Y, X) real."""
    return _SumAbs2.apply(r)


class PixelObjective:
    """``F(z) = Σ_T |q(φ(z)) − y|² + Σ_P λ (φ(z) − p_reg)²`` per pixel.

    Parameters
    ----------
    q
        Pixel-separable signal model, (B, P, Y, X) real -> (B, T, Y, X) real or complex.
    y
        (B, T, Y, X) data.
    p_reg
        (B, P, Y, X) real prior.
    lam
        Real tensor broadcastable to (B, P, Y, X), ``>= 0``.
    reparam
        The map ``p = φ(z)``.
    """

    def __init__(
        self,
        q: Callable[[torch.Tensor], torch.Tensor],
        y: torch.Tensor,
        p_reg: torch.Tensor,
        lam: torch.Tensor,
        reparam: BoxReparametrisation,
    ) -> None:
        self.q, self.y, self.p_reg, self.lam, self.reparam = q, y, p_reg, lam, reparam
        self.evaluations = 0
        with torch.no_grad():
            self._scale2 = sum_abs2(y) + (lam * p_reg.square()).sum(1, keepdim=True)

    def rounding_level(self, f: torch.Tensor) -> torch.Tensor:
        """Size of the rounding error of a computed per-pixel objective ``f`` (B, 1, Y, X).

        ``q − y`` cancels: its absolute error is ``~eps·|y|``, so ``F`` is only known to about
        ``eps·(F + √(F·(Σ|y|² + Σλ p_reg²)))``; changes below this are not resolved.
        """
        f = f.detach().abs()
        return 16 * torch.finfo(f.dtype).eps * (f + torch.sqrt(f * self._scale2))

    def per_pixel(self, z: torch.Tensor) -> torch.Tensor:
        """(B, P, Y, X) -> per-pixel objective (B, 1, Y, X)."""
        self.evaluations += 1
        p = self.reparam.to_constrained(z)
        r = self.q(p) - self.y
        return sum_abs2(r) + (self.lam * (p - self.p_reg).square()).sum(1, keepdim=True)

    def value_and_grad(self, z: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel objective (B, 1, Y, X) and its gradient ∂F/∂z (B, P, Y, X).

        With ``create_graph`` both stay in the autograd graph of ``z`` and the problem data.
        """
        if not create_graph or not z.requires_grad:
            z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            f = self.per_pixel(z)
            (g,) = torch.autograd.grad(f.sum(), z, create_graph=create_graph)
        if not create_graph:
            f = f.detach()
        return f, g

    def gauss_newton_terms(
        self, z: torch.Tensor, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objective (B,1,Y,X), gradient (B,P,Y,X) and Gauss–Newton matrix ``JᵀJ`` (P,P,B,1,Y,X).

        ``J`` is the Jacobian of the stacked residual ``[q(φ(z)) − y; √λ (φ(z) − p_reg)]`` with
        respect to ``z``; the gradient is ``2 Jᵀ r`` and the Gauss–Newton Hessian ``2 JᵀJ``. The
        columns of the model part come from reverse mode twice: ``v(u) = J_qᵀ u`` is built with
        ``create_graph``, and since ``Σ_pixels v_k(u)`` is linear in ``u`` with per-pixel
        coefficients (pixel separability), its gradient with respect to ``u`` is column ``k`` of
        every pixel's Jacobian at once (this is faster than forward-mode AD in current PyTorch).
        """
        n_par = z.shape[1]
        keep = create_graph and torch.is_grad_enabled()
        zz = z if (keep and z.requires_grad) else z.detach().requires_grad_(True)
        with torch.enable_grad():
            self.evaluations += 1
            p = self.reparam.to_constrained(zz)
            r = self.q(p) - self.y
            d = p - self.p_reg
            # Complex residuals as real pairs, stacked along T so that sums over dim 1 are fast.
            rr = torch.cat([r.real, r.imag], 1) if r.is_complex() else r
            (dphi,) = torch.autograd.grad(p.sum(), zz, create_graph=keep, retain_graph=True)
            u = torch.zeros_like(rr, requires_grad=True)
            v = None
            if rr.requires_grad:
                (v,) = torch.autograd.grad(rr, zz, u, create_graph=True, allow_unused=True)
            cols = []
            for k in range(n_par):
                col = None
                if v is not None and v.requires_grad:
                    (col,) = torch.autograd.grad(
                        v[:, k].sum(), u, retain_graph=True, create_graph=keep, allow_unused=True
                    )
                cols.append(torch.zeros_like(rr) if col is None else col)
        f = rr.square().sum(1, keepdim=True) + (self.lam * d.square()).sum(1, keepdim=True)
        lam_dphi = self.lam * dphi
        grad = 2 * (torch.cat([(c * rr).sum(1, keepdim=True) for c in cols], 1) + lam_dphi * d)
        prior_diag = lam_dphi * dphi
        rows: list[list[torch.Tensor]] = []
        for i in range(n_par):
            row = []
            for j in range(n_par):
                if j < i:
                    row.append(rows[j][i])
                    continue
                entry = (cols[i] * cols[j]).sum(1, keepdim=True)
                row.append(entry + prior_diag[:, i : i + 1] if i == j else entry)
            rows.append(row)
        gn = torch.stack([torch.stack(row) for row in rows])
        if not keep:
            f, grad, gn = f.detach(), grad.detach(), gn.detach()
        return f, grad, gn


def _finite_pixels(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(f) & torch.isfinite(g).all(1, keepdim=True)


def _gtest(f: torch.Tensor, g: torch.Tensor, tol: float) -> torch.Tensor:
    """Gradient test per pixel: ``max_k |∂F/∂z_k| <= tol · (1 + F)``."""
    return g.detach().abs().amax(1, keepdim=True) <= tol * (1 + f.detach().abs())


def _info(
    status: torch.Tensor, iterations: torch.Tensor, f: torch.Tensor, g: torch.Tensor, evaluations: int
) -> dict[str, Any]:
    s = status[:, 0]
    return {
        "status": s,
        "converged": (s == STATUS["gradient"]) | (s == STATUS["objective_change"]),
        "iterations": iterations[:, 0],
        "objective": f.detach()[:, 0],
        "gradient_norm": g.detach().abs().amax(1),
        "evaluations": evaluations,
    }


def lbfgs_pixels(
    obj: PixelObjective,
    z0: torch.Tensor,
    max_iter: int,
    tol: float,
    ftol: float,
    history: int = 10,
    differentiable: bool = False,
    max_line_search: int = 12,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Per-pixel L-BFGS with a per-pixel backtracking Armijo line search.

    Every pixel keeps up to ``history`` curvature pairs (a pair is dropped for a pixel whose
    ``sᵀy <= eps·‖s‖‖y‖``), its own scaling ``γ = sᵀy / yᵀy`` and its own step length; trial
    points are evaluated for all pixels at once and each pixel accepts its own. A pixel whose line
    search fails loses its memory and retries along ``-∇F``; if that fails too (no decrease
    possible at working precision) it stops with status ``stalled``.

    Returns
    -------
    ``z`` (B, P, Y, X) and an info dict (see :func:`solvers.nonlinear_fit.nonlinear_fit`).
    """
    eps = torch.finfo(z0.dtype).eps
    c1 = 1e-4
    clamp = obj.reparam.clamp_z
    z = clamp(z0)
    f, g = obj.value_and_grad(z, create_graph=differentiable)
    status = torch.zeros_like(f, dtype=torch.int8)
    finite = _finite_pixels(f, g)
    status[~finite] = STATUS["nonfinite"]
    status[finite & _gtest(f, g, tol)] = STATUS["gradient"]
    active = status == STATUS["max_iter"]
    iterations = torch.zeros_like(f, dtype=torch.long)
    mem_s: list[torch.Tensor] = []
    mem_y: list[torch.Tensor] = []
    mem_rho: list[torch.Tensor] = []
    gamma = torch.ones_like(f.detach())
    has_pair = torch.zeros_like(active)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        # Two-loop recursion; empty or dropped slots have rho = 0 and do nothing.
        d = -g
        if mem_s:
            alphas = []
            for s_i, y_i, rho_i in zip(reversed(mem_s), reversed(mem_y), reversed(mem_rho)):
                a_i = rho_i * _dot(s_i, d)
                d = d - a_i * y_i
                alphas.append(a_i)
            d = gamma * d
            for s_i, y_i, rho_i, a_i in zip(mem_s, mem_y, mem_rho, reversed(alphas)):
                d = d + s_i * (a_i - rho_i * _dot(y_i, d))
            d = torch.where(has_pair, d, -g)
        gd = _dot(g, d).detach()
        bad = ~(gd < 0)
        if bool((bad & has_pair).any()):
            d = torch.where(bad, -g, d)
            gd = _dot(g, d).detach()
            mem_rho = [torch.where(bad, 0.0, r) for r in mem_rho]
            has_pair = has_pair & ~bad
        gnorm1 = g.detach().abs().sum(1, keepdim=True)
        first = torch.clamp(1.0 / torch.where(gnorm1 > 0, gnorm1, torch.ones_like(gnorm1)), max=1.0)
        t = torch.where(has_pair, torch.ones_like(gnorm1), first)
        dmax = d.detach().abs().amax(1, keepdim=True)
        zmax = z.detach().abs().amax(1, keepdim=True)

        pending = active & (gd < 0)
        negligible = active & ~pending
        z_new, f_new, g_new = z, f, g
        for _ls in range(max_line_search):
            z_t = torch.where(pending, clamp(z + t * d), z_new)
            f_t, g_t = obj.value_and_grad(z_t, create_graph=differentiable)
            f_td = f_t.detach()
            armijo = f_td <= f.detach() + c1 * t * gd
            # Near the minimum F stops resolving the decrease: fall back to Armijo's equivalent for
            # a quadratic, stated on the directional derivative (Hager–Zhang approximate Wolfe).
            flat = (f_td <= f.detach() + obj.rounding_level(f)) & (
                _dot(g_t, d).detach() <= (1 - 2 * c1) * gd.abs()
            )
            ok = pending & _finite_pixels(f_t, g_t) & (armijo | flat)
            z_new = torch.where(ok, z_t, z_new)
            f_new = torch.where(ok, f_t, f_new)
            g_new = torch.where(ok, g_t, g_new)
            pending = pending & ~ok
            if not bool(pending.any()):
                break
            # Safeguarded quadratic interpolation of the step length; 0.1 t where f was not finite.
            curv = f_t.detach() - f.detach() - gd * t
            t_q = -gd * t * t / (2 * torch.where(curv > 0, curv, torch.ones_like(curv)))
            t_q = torch.where((curv > 0) & torch.isfinite(f_t.detach()), t_q, 0.1 * t)
            t = torch.where(pending, torch.minimum(torch.maximum(t_q, 0.1 * t), 0.5 * t), t)
            tiny = pending & (t * dmax <= eps * (1 + zmax))
            negligible = negligible | tiny
            pending = pending & ~tiny
        failed = (pending | negligible) & active
        accepted = active & ~failed

        # The curvature memory is a constant of the autograd graph in differentiable mode.
        s = (z_new - z).detach()
        yv = (g_new - g).detach()
        sy, yy, ss = _dot(s, yv).detach(), _dot(yv, yv).detach(), _dot(s, s).detach()
        good = accepted & (sy > eps * torch.sqrt(ss * yy))
        mem_s.append(s)
        mem_y.append(yv)
        mem_rho.append(torch.where(good, 1 / torch.where(good, sy, torch.ones_like(sy)), torch.zeros_like(sy)))
        if len(mem_s) > history:
            mem_s.pop(0), mem_y.pop(0), mem_rho.pop(0)
        gamma = torch.where(good, sy / torch.where(good, yy, torch.ones_like(yy)), gamma)
        # A failed search with memory retries along -∇F; without memory the pixel has stalled.
        stalled = failed & ~has_pair
        reset = failed & has_pair
        has_pair = (has_pair & ~reset) | good
        if bool(reset.any()):
            mem_rho = [torch.where(reset, 0.0, r) for r in mem_rho]
        df = (f - f_new).detach()
        z, f, g = z_new, f_new, g_new
        iterations += accepted.long()
        gconv = accepted & _gtest(f, g, tol)
        fconv = accepted & ~gconv & (df <= ftol * f.detach().abs()) & (ftol > 0)
        status = torch.where(gconv, STATUS["gradient"], status)
        status = torch.where(fconv, STATUS["objective_change"], status)
        status = torch.where(stalled, STATUS["stalled"], status).to(torch.int8)
        active = active & ~gconv & ~fconv & ~stalled
    return z, _info(status, iterations, f, g, obj.evaluations)


def levenberg_marquardt_pixels(
    obj: PixelObjective,
    z0: torch.Tensor,
    max_iter: int,
    tol: float,
    ftol: float,
    differentiable: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Per-pixel Levenberg–Marquardt on the stacked residual (Gauss–Newton with damping).

    Each pixel solves ``(JᵀJ + μ D) δ = −Jᵀr`` with Marquardt scaling ``D = diag(JᵀJ)`` (floored
    at ``1e-8 · max diag``), accepts the step if the objective decreases, and updates its own
    ``μ`` by Nielsen's rule (``μ·max(1/3, 1 − (2ρ − 1)³)`` on success, ``μ·ν, ν·2`` on failure).
    A pixel whose step becomes negligible (``‖δ‖∞ <= eps (1 + ‖z‖∞)``) stops as ``stalled``.

    Returns
    -------
    ``z`` (B, P, Y, X) and an info dict.
    """
    eps = torch.finfo(z0.dtype).eps
    clamp = obj.reparam.clamp_z
    n_par = z0.shape[1]
    z = clamp(z0)
    f, g, a = obj.gauss_newton_terms(z, create_graph=differentiable)
    status = torch.zeros_like(f, dtype=torch.int8)
    finite = _finite_pixels(f, g) & torch.isfinite(a).all(0).all(0)
    status[~finite] = STATUS["nonfinite"]
    status[finite & _gtest(f, g, tol)] = STATUS["gradient"]
    active = status == STATUS["max_iter"]
    iterations = torch.zeros_like(f, dtype=torch.long)
    mu = torch.full_like(f.detach(), 1e-3)
    nu = torch.full_like(mu, 2.0)
    eye = torch.eye(n_par, dtype=z.dtype, device=z.device).reshape(n_par, n_par, *([1] * f.ndim))
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        diag = torch.stack([a[i, i] for i in range(n_par)]).detach()
        dmax = diag.amax(0, keepdim=True)
        scale = torch.maximum(diag, 1e-8 * dmax)
        scale = torch.where(dmax > 0, scale, torch.ones_like(scale))
        lower, ok = small_cholesky(a + (mu * scale).unsqueeze(1) * eye)
        delta_pm = small_cholesky_solve(lower, -0.5 * to_matrix_layout(g))
        ok = active & ok
        delta_pm = torch.where(ok, delta_pm, torch.zeros_like(delta_pm))
        delta = from_matrix_layout(delta_pm)
        # Predicted decrease of the quadratic model  f + gᵀδ + δᵀ(JᵀJ)δ.
        a_delta = from_matrix_layout(torch.einsum("ij...,j...->i...", a, delta_pm))
        pred = -(_dot(g, delta) + _dot(delta, a_delta)).detach()
        z_t = torch.where(ok, clamp(z + delta), z)
        f_t, g_t, a_t = obj.gauss_newton_terms(z_t, create_graph=differentiable)
        actual = (f - f_t).detach()
        rounding = obj.rounding_level(f)
        rho = actual / torch.where(pred > 0, pred, torch.ones_like(pred))
        # Below the rounding level of F the gain ratio is noise: count such a step as a good one.
        rho = torch.where(pred <= rounding, torch.ones_like(rho), rho)
        finite_t = _finite_pixels(f_t, g_t) & torch.isfinite(a_t).all(0).all(0)
        # Accept a decrease, or (where F no longer resolves the change) a smaller gradient.
        flat = (actual.abs() <= rounding) & (
            g_t.detach().abs().amax(1, keepdim=True) < g.detach().abs().amax(1, keepdim=True)
        )
        accept = ok & finite_t & (pred > 0) & ((actual > 0) | flat)
        z = torch.where(accept, z_t, z)
        f = torch.where(accept, f_t, f)
        g = torch.where(accept, g_t, g)
        a = torch.where(accept, a_t, a)
        mu = torch.where(accept, mu * torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3), torch.where(active, mu * nu, mu))
        nu = torch.where(accept, torch.full_like(nu, 2.0), torch.where(active, nu * 2, nu))
        iterations += accept.long()
        step = delta.detach().abs().amax(1, keepdim=True)
        zmax = z.detach().abs().amax(1, keepdim=True)
        gconv = accept & _gtest(f, g, tol)
        fconv = accept & ~gconv & (actual <= ftol * f.detach().abs()) & (ftol > 0)
        stalled = active & ~accept & ((step <= eps * (1 + zmax)) | ~torch.isfinite(mu) | (mu > 1e30))
        status = torch.where(gconv, STATUS["gradient"], status)
        status = torch.where(fconv, STATUS["objective_change"], status)
        status = torch.where(stalled, STATUS["stalled"], status).to(torch.int8)
        active = active & ~gconv & ~fconv & ~stalled
    return z, _info(status, iterations, f, g, obj.evaluations)
