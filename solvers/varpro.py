"""Variable projection: the pixel-wise fit of a model with a linear amplitude.

For a model ``q(p) = a · g(θ)`` (see :mod:`solvers.linear_amplitude`) the amplitude ``a`` is
eliminated in closed form (the ridge solution that includes ``λ (a − ā)²``), so that only the
nonlinear parameters ``θ`` are searched, every pixel on its own:

1. **Global grid.** The reduced objective ``φ(θ) = min_a F(a, θ)`` is evaluated on a grid
   spanning ``θ``'s bounds, uniform in the solver's unconstrained variable ``z`` (``θ = ψ(z)`` of
   :mod:`solvers.bounds`; for a two-sided bound from ``1e-3`` to ``1 − 1e-3`` of the range, for a
   one-sided bound at distances ``1e-3 … 1e3 · max(1, |bound|)``): 64 points for one ``θ``, 24
   per axis for two, 10 for more. A spatially uniform model is evaluated once on a
   ``(B, P, 1, G)`` grid map and the grid is scored by ``T``-term inner products; any other model
   costs one full evaluation per grid point. The start ``p0`` is scored too, and the best point of
   each pixel is kept. Grid, start and refinement are all scale- and phase-equivariant: scaling
   ``y`` (and ``ā``) by ``s`` scales ``φ`` by ``|s|²`` and leaves its minimiser alone.
2. **Refinement.** Levenberg–Marquardt on the reduced problem in ``z``: at each pixel the
   gradient is the exact envelope gradient ``∂F/∂z`` at ``a(θ)``, the curvature the Gauss–Newton
   matrix of the full problem with ``a`` eliminated (its Schur complement), the step is accepted
   if ``F`` decreases (or, where ``F`` no longer resolves the change, if the gradient shrinks).
   ``∂g/∂z`` comes from forward-mode AD (reverse-over-reverse where ``q`` does not support it).
   A pixel stops when its undamped Gauss–Newton step is ``<= tol · (1 + |z|)``, a relative test
   that does not depend on the data's scale.

If a nonlinear parameter is unbounded there is no grid: the refinement starts at ``p0``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd import forward_ad as fwad

from solvers.bounds import BoxReparametrisation
from solvers.linear_amplitude import AmplitudeSpec, ridge_amplitude
from solvers.pixel_solvers import STATUS
from solvers.small_matrices import small_cholesky, small_cholesky_solve

__all__ = ["varpro_pixels", "GRID_POINTS"]

logger = logging.getLogger(__name__)

#: Grid points per nonlinear parameter, by the number of nonlinear parameters.
GRID_POINTS = {1: 64, 2: 24}
_GRID_POINTS_MORE = 10
_GRID_MARGIN = 1e-3


@dataclass
class _Problem:
    """The data of one fit, split into amplitude and ``θ`` parts (all (B|1, 1, Y|1, X|1) or (B, ·, Y, X))."""

    q: Callable[[torch.Tensor], torch.Tensor]
    y: torch.Tensor
    spec: AmplitudeSpec
    sign: int
    lam_a: list[torch.Tensor | None]  # None where λ = 0 everywhere
    reg_a: list[torch.Tensor]
    lam_t: list[torch.Tensor | None]
    reg_t: list[torch.Tensor]
    reparam_t: BoxReparametrisation
    n_par: int
    evaluations: int = 0

    def assemble(self, theta: torch.Tensor, amplitude: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``p`` (B, P, ...) from ``θ`` (B, Pθ, ...) and the amplitude (unit amplitude if None)."""
        cols: list[torch.Tensor | None] = [None] * self.n_par
        for k, i in enumerate(self.spec.nonlinear):
            cols[i] = theta[:, k]
        for k, i in enumerate(self.spec.linear):
            cols[i] = amplitude[k] if amplitude is not None else torch.full_like(theta[:, 0], 1.0 if k == 0 else 0.0)
        return torch.stack(cols, 1)  # type: ignore[arg-type]

    def prior_t(self, theta: torch.Tensor) -> torch.Tensor:
        """``Σ_k λθ_k (θ_k − θ̄_k)²`` per pixel (B, 1, Y, X) or 0."""
        out = torch.zeros((), dtype=theta.dtype, device=theta.device)
        for k, (lam, reg) in enumerate(zip(self.lam_t, self.reg_t)):
            if lam is not None:
                out = out + lam * (theta[:, k : k + 1] - reg).square()
        return out

    def inner(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``Σ_T conj(g) v`` (B, 1, Y, X); real part only for a real amplitude."""
        if g.is_complex() and not self.spec.complex:  # only Re Σ conj(g) v is needed
            out = (g.real * v.real + g.imag * v.imag) if v.is_complex() else g.real * v
            return out.sum(1, keepdim=True)
        return ((g.conj() if g.is_complex() else g) * v).sum(1, keepdim=True)


def _abs2(t: torch.Tensor) -> torch.Tensor:
    return t.real.square() + t.imag.square() if t.is_complex() else t.square()


def _grid_axes(reparam: BoxReparametrisation, n_points: int) -> list[torch.Tensor] | None:
    """Grid of ``z`` values per nonlinear parameter, or None if one of them is unbounded."""
    axes = []
    m = _GRID_MARGIN
    for lo, up in zip(reparam.lower, reparam.upper):
        if math.isfinite(lo) and math.isfinite(up):
            p = torch.linspace(math.log(m / (1 - m)), math.log((1 - m) / m), n_points, dtype=torch.float64)
            axes.append(p)
            continue
        if not (math.isfinite(lo) or math.isfinite(up)):
            return None
        bound = lo if math.isfinite(lo) else up
        dist = max(1.0, abs(bound)) * torch.logspace(-3, 3, n_points, dtype=torch.float64)
        p = bound + dist if math.isfinite(lo) else bound - dist
        one = BoxReparametrisation([lo], [up], dtype=torch.float64)
        axes.append(one.to_unconstrained(p.reshape(1, 1, -1))[0, 0])
    return axes


def _grid_search(prob: _Problem, z_start: torch.Tensor) -> torch.Tensor:
    """Best ``z`` (B, Pθ, Y, X) of each pixel over the grid and the start."""
    y = prob.y
    dt = y.real.dtype if y.is_complex() else y.dtype
    n_t = len(prob.spec.nonlinear)
    best_z = z_start.clone()
    best_f = _reduced_objective(prob, z_start)
    axes = _grid_axes(prob.reparam_t, GRID_POINTS.get(n_t, _GRID_POINTS_MORE))
    if axes is None:
        return best_z
    zg = torch.cartesian_prod(*axes).reshape(-1, n_t).to(dtype=dt, device=y.device)  # (G, Pθ)
    theta_g = prob.reparam_t.to_constrained(zg.T.unsqueeze(0))[0].T  # (G, Pθ)
    batch, _, ny, nx = y.shape
    uniform = prob.spec.uniform
    if uniform:
        tg = theta_g.T.reshape(1, n_t, 1, -1).expand(batch, n_t, 1, -1)
        g_all = prob.q(prob.assemble(tg))  # (B, T, 1, G)
        prob.evaluations += 1
        n_all = _abs2(g_all).sum(1)[:, 0]  # (B, G)
        real_g = g_all.is_complex() and not bool(g_all.imag.any())
        g_all = g_all.real if real_g or not g_all.is_complex() else g_all
        yv = torch.view_as_real(y) if (y.is_complex() and not g_all.is_complex()) else y
        if g_all.is_complex() and not y.is_complex():
            y = yv = y.to(g_all.dtype)
        y_flat = yv.reshape(batch, y.shape[1], -1)
    for j in range(zg.shape[0]):
        theta_j = theta_g[j].reshape(1, n_t, 1, 1)
        if uniform:
            g_j = g_all[:, :, 0, j]  # (B, T)
            c = torch.bmm(g_j.conj().unsqueeze(1) if g_j.is_complex() else g_j.unsqueeze(1), y_flat)
            c = c.reshape((batch, 1, ny, nx, 2) if yv is not y else (batch, 1, ny, nx))
            c = torch.view_as_complex(c) if yv is not y else c
            if not prob.spec.complex and c.is_complex():
                c = c.real
            n = n_all[:, j].reshape(batch, 1, 1, 1)
        else:
            g = prob.q(prob.assemble(theta_j.expand(batch, n_t, ny, nx)))
            prob.evaluations += 1
            c, n = prob.inner(g, y), _abs2(g).sum(1, keepdim=True)
        f = ridge_amplitude(c, n, prob.lam_a, prob.reg_a, prob.sign)[1] + prob.prior_t(theta_j)
        better = f < best_f
        best_f = torch.where(better, f, best_f)
        best_z = torch.where(better, zg[j].reshape(1, n_t, 1, 1), best_z)
    return best_z


def _reduced_objective(prob: _Problem, z: torch.Tensor) -> torch.Tensor:
    """``φ(z) − Σ|y|² − Σλā²`` (B, 1, Y, X), one plain evaluation of ``q``."""
    theta = prob.reparam_t.to_constrained(z)
    g = prob.q(prob.assemble(theta))
    prob.evaluations += 1
    return ridge_amplitude(prob.inner(g, prob.y), _abs2(g).sum(1, keepdim=True), prob.lam_a, prob.reg_a, prob.sign)[1] + prob.prior_t(theta)


def _jvp(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` and ``J v`` (forward mode; reverse-over-reverse where forward mode is missing)."""
    try:
        with fwad.dual_level():
            out, tangent = fwad.unpack_dual(fn(fwad.make_dual(x, v)))
        if tangent is None:
            tangent = torch.zeros_like(out)
        return out, tangent
    except (RuntimeError, NotImplementedError):
        pass
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        out = fn(xx)
        flat = torch.cat([out.real, out.imag], 1) if out.is_complex() else out
        u = torch.zeros_like(flat, requires_grad=True)
        (w,) = torch.autograd.grad(flat, xx, u, create_graph=True, allow_unused=True)
        if w is None or not w.requires_grad:
            return out.detach(), torch.zeros_like(out.detach())
        (jv,) = torch.autograd.grad(w, u, v, allow_unused=True)
    jv = torch.zeros_like(flat) if jv is None else jv
    if out.is_complex():
        t = out.shape[1]
        jv = torch.complex(jv[:, :t], jv[:, t:])
    return out.detach(), jv.detach()


@dataclass
class _State:
    """Per-pixel quantities at one ``z`` (see :func:`_evaluate`)."""

    f: torch.Tensor  # (B, 1, Y, X) full objective
    grad: torch.Tensor  # (B, Pθ, Y, X) ∂F/∂z at a(θ)
    schur: torch.Tensor  # (Pθ, Pθ, B, 1, Y, X) reduced Gauss–Newton matrix (halved)
    amplitude: list[torch.Tensor]
    theta: torch.Tensor


def _evaluate(prob: _Problem, z: torch.Tensor) -> _State:
    """Objective, envelope gradient and reduced Gauss–Newton matrix at ``z`` (B, Pθ, Y, X)."""
    n_t = z.shape[1]
    y = prob.y
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        theta_g = prob.reparam_t.to_constrained(zz)
        (dtheta,) = torch.autograd.grad(theta_g.sum(), zz)
    theta = theta_g.detach()
    g, dg = None, []
    for k in range(n_t):
        tangent = torch.zeros_like(theta)
        tangent[:, k] = dtheta[:, k]
        out, jv = _jvp(lambda t: prob.q(prob.assemble(t)), theta, tangent)
        g = out if g is None else g
        dg.append(jv)
    prob.evaluations += n_t
    assert g is not None
    c, n = prob.inner(g, y), _abs2(g).sum(1, keepdim=True)
    amp, _ = ridge_amplitude(c, n, prob.lam_a, prob.reg_a, prob.sign)
    a = torch.complex(amp[0], amp[1]) if prob.spec.complex else amp[0]
    resid = a * g - y
    f = _abs2(resid).sum(1, keepdim=True) + prob.prior_t(theta)
    for lam, reg, a_l in zip(prob.lam_a, prob.reg_a, amp):
        if lam is not None:
            f = f + lam * (a_l - reg).square()
    j = [a * d for d in dg]
    grad = torch.cat([2 * prob.inner(jk, resid).real for jk in j], 1)
    for k, (lam, reg) in enumerate(zip(prob.lam_t, prob.reg_t)):
        if lam is not None:
            grad[:, k : k + 1] += 2 * lam * (theta[:, k : k + 1] - reg) * dtheta[:, k : k + 1]
    # Schur complement of the amplitude block in JᵀJ (J of the stacked residual, a eliminated).
    beta = [prob.inner(g, jk) for jk in j]
    parts = [(lambda b: b.real), (lambda b: b.imag)] if prob.spec.complex else [(lambda b: b.real if b.is_complex() else b)]
    rows = []
    for k in range(n_t):
        row = []
        for m in range(n_t):
            entry = prob.inner(j[k], j[m]).real
            lam_k = prob.lam_t[k]
            if k == m and lam_k is not None:
                entry = entry + lam_k * dtheta[:, k : k + 1].square()
            for part, lam_l, a_l in zip(parts, prob.lam_a, amp):
                den = n if lam_l is None else n + lam_l
                free = den > 0 if prob.sign == 0 else (den > 0) & (a_l != 0)
                entry = entry - torch.where(free, part(beta[k]) * part(beta[m]) / torch.where(free, den, 1.0), 0.0)
            row.append(entry)
        rows.append(torch.stack(row))
    return _State(f, grad, torch.stack(rows), amp, theta)


def _gn_step(schur: torch.Tensor, grad: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped step ``−(S + μ diag S)⁻¹ grad / 2`` (B, Pθ, Y, X) and where it exists."""
    n_t = grad.shape[1]
    if n_t == 1:
        s = schur[0, 0] * (1 + mu)
        ok = s > 0
        return torch.where(ok, -0.5 * grad / torch.where(ok, s, 1.0), 0.0), ok
    eye = torch.eye(n_t, dtype=grad.dtype, device=grad.device).reshape(n_t, n_t, 1, 1, 1, 1)
    diag = torch.stack([schur[i, i] for i in range(n_t)])
    lower, ok = small_cholesky(schur + (mu * diag).unsqueeze(1) * eye)
    step = small_cholesky_solve(lower, -0.5 * grad.transpose(0, 1).unsqueeze(2)).squeeze(2).transpose(0, 1)
    return torch.where(ok, step, 0.0), ok


def _blend(mask: torch.Tensor, new: _State, old: _State) -> _State:
    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, a, b)

    return _State(
        pick(new.f, old.f), pick(new.grad, old.grad), pick(new.schur, old.schur),
        [pick(a, b) for a, b in zip(new.amplitude, old.amplitude)], pick(new.theta, old.theta),
    )


def _rounding(f: torch.Tensor, scale2: torch.Tensor) -> torch.Tensor:
    return 16 * torch.finfo(f.dtype).eps * (f.abs() + torch.sqrt(f.abs() * scale2))


def varpro_pixels(
    q: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    p_reg: torch.Tensor,
    lam: torch.Tensor,
    spec: AmplitudeSpec,
    reparam: BoxReparametrisation,
    p_start: torch.Tensor,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Variable-projection fit of every pixel (module docstring); no autograd graph.

    Parameters
    ----------
    q, y, p_reg, lam
        As for :func:`solvers.nonlinear_fit`; ``lam`` normalised (0-d or 4-D, broadcastable).
    spec
        The model's linear amplitude.
    reparam
        Map ``p = φ(z)`` with the bounds this fit keeps (:meth:`AmplitudeSpec.fit_bounds`).
    p_start
        (B, P, Y, X) start inside the bounds; its ``θ`` is one grid candidate.
    max_iter, tol
        Refinement iterations and relative step tolerance.

    Returns
    -------
    ``z`` (B, P, Y, X) with ``p = reparam.to_constrained(z)`` and the info dict of
    :mod:`solvers.pixel_solvers` (status 1: the step test met, 3: stalled, 0: ``max_iter``).
    """
    eps = torch.finfo(p_reg.dtype).eps

    def part(t: torch.Tensor, k: int) -> torch.Tensor | None:
        t = t.reshape(1, 1, 1, 1) if t.ndim == 0 else t[:, k : k + 1] if t.shape[1] > 1 else t
        return None if not bool(t.any()) else t

    lo, up = reparam.lower, reparam.upper
    rt = BoxReparametrisation([lo[i] for i in spec.nonlinear], [up[i] for i in spec.nonlinear], p_reg.dtype, p_reg.device)
    prob = _Problem(
        q, y, spec, spec.sign(lo, up) if not spec.complex else 0,
        [part(lam, i) for i in spec.linear], [p_reg[:, i : i + 1] for i in spec.linear],
        [part(lam, i) for i in spec.nonlinear], [p_reg[:, i : i + 1] for i in spec.nonlinear], rt, p_reg.shape[1],
    )
    z = rt.to_unconstrained(p_start[:, list(spec.nonlinear)])
    z = _grid_search(prob, z)
    scale2 = _abs2(y).sum(1, keepdim=True) + (lam * p_reg.square()).sum(1, keepdim=True)
    state = _evaluate(prob, z)
    shape1 = state.f.shape
    status = torch.zeros(shape1, dtype=torch.int8, device=y.device)
    finite = torch.isfinite(state.f) & torch.isfinite(state.grad).all(1, keepdim=True)
    status[~finite] = STATUS["nonfinite"]
    active = status == STATUS["max_iter"]
    iterations = torch.zeros(shape1, dtype=torch.long, device=y.device)
    mu = torch.zeros_like(state.f)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        newton, ok0 = _gn_step(state.schur, state.grad, torch.zeros_like(mu))
        zmax = 1 + z.abs().amax(1, keepdim=True)
        small = ok0 & (newton.abs().amax(1, keepdim=True) <= tol * zmax)
        step, ok = _gn_step(state.schur, state.grad, mu)
        step = torch.where(small, newton, step)
        no_curvature = active & ~ok & ~small
        zero_grad = no_curvature & (state.grad == 0).all(1, keepdim=True)
        status = torch.where(zero_grad, STATUS["gradient"], torch.where(no_curvature, STATUS["stalled"], status))
        active = active & ~no_curvature
        z_t = torch.where(active, rt.clamp_z(z + step), z)
        trial = _evaluate(prob, z_t)
        finite_t = torch.isfinite(trial.f) & torch.isfinite(trial.grad).all(1, keepdim=True)
        flat = (trial.f <= state.f + _rounding(state.f, scale2)) & (
            trial.grad.abs().amax(1, keepdim=True) <= state.grad.abs().amax(1, keepdim=True)
        )
        accept = active & finite_t & ((trial.f < state.f) | flat)
        state = _blend(accept, trial, state)
        z = torch.where(accept, z_t, z)
        iterations += accept.long()
        mu = torch.where(accept, mu / 3, torch.where(active, torch.clamp(4 * mu, min=1e-3), mu))
        tiny = (step.abs().amax(1, keepdim=True) <= eps * zmax) | (mu > 1e20)
        done = active & small
        stalled = active & ~accept & ~small & tiny
        status = torch.where(done, STATUS["gradient"], torch.where(stalled, STATUS["stalled"], status)).to(torch.int8)
        active = active & ~done & ~stalled
    z_full = [None] * prob.n_par
    z_amp = reparam.to_unconstrained(prob.assemble(state.theta, [a[:, 0] for a in state.amplitude]))
    for k, i in enumerate(spec.nonlinear):
        z_full[i] = z[:, k]
    for i in spec.linear:
        z_full[i] = z_amp[:, i]
    s = status[:, 0]
    info = {
        "status": s,
        "converged": (s == STATUS["gradient"]) | (s == STATUS["objective_change"]),
        "iterations": iterations[:, 0],
        "objective": state.f[:, 0],
        "gradient_norm": state.grad.abs().amax(1),
        "evaluations": prob.evaluations,
    }
    return torch.stack(z_full, 1), info  # type: ignore[arg-type]
