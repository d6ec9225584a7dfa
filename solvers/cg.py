"""Batched conjugate gradient for Hermitian positive-definite systems ``H x = b``.

A *sample* is one index of the leading dimension of ``b``; all remaining dimensions together
form that sample's vector. Every sample has its own step sizes ``α``, ``β`` and its own stopping
test on the relative residual ``‖b - H x‖ / ‖b‖ <= tol``. A sample that has converged is frozen
(its step size is set to zero) while the others continue; the loop ends when every sample has
stopped or after ``max_iter`` iterations.

Two execution modes share one code path:

- when autograd has nothing to record (grad disabled, or neither ``b``, ``x0`` nor ``H p``
  requires grad), the iterates are updated in place, so an iteration allocates nothing but what
  the operator itself allocates;
- otherwise every update is out of place, so autograd can differentiate through the unrolled
  iterations (used by ``data_consistency(..., implicit=False)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch

from operators.linear_operator import LinearOperator

__all__ = ["CGResult", "cg"]


@dataclass(frozen=True)
class CGResult:
    """Outcome of :func:`cg`.

    Attributes
    ----------
    x
        Solution estimate, same shape and dtype as ``b``.
    iterations
        ``(B,)`` long: iterations each sample took (0 if it started converged).
    residual_norm
        ``(B,)`` real: ``‖b - H x‖`` per sample, from the CG recursion (not recomputed).
    converged
        ``(B,)`` bool: whether ``residual_norm <= tol * rhs_norm``.
    rhs_norm
        ``(B,)`` real: ``‖b‖`` per sample.
    """

    x: torch.Tensor
    iterations: torch.Tensor
    residual_norm: torch.Tensor
    converged: torch.Tensor
    rhs_norm: torch.Tensor

    @property
    def relative_residual(self) -> torch.Tensor:
        """``(B,)`` real: ``residual_norm / rhs_norm`` (0 where ``rhs_norm`` is 0)."""
        safe = torch.where(self.rhs_norm > 0, self.rhs_norm, torch.ones_like(self.rhs_norm))
        return torch.where(self.rhs_norm > 0, self.residual_norm / safe, self.residual_norm)


def batched_real_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re⟨a, b⟩`` per sample (leading dimension), computed in the real dtype.

    Parameters
    ----------
    a, b
        Tensors of equal shape ``(B, ...)``, real or complex.

    Returns
    -------
    ``(B,)`` real tensor. Differentiable.
    """
    n = a.shape[0]
    if a.is_complex():
        # Re(conj(a)·b) = Re a·Re b + Im a·Im b: one real dot product of twice the length.
        a = torch.view_as_real(a.resolve_conj())
        b = torch.view_as_real(b.resolve_conj())
    return torch.bmm(a.reshape(n, 1, -1), b.reshape(n, -1, 1)).reshape(n)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a ``(B,)`` tensor as ``(B, 1, ..., 1)`` and cast it to ``like``'s dtype."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1))).to(like.dtype)


def _safe_div(num: torch.Tensor, den: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``ok``, 0 elsewhere, without NaN in values or in gradients."""
    den = torch.where(ok, den, torch.ones_like(den))
    return torch.where(ok, num / den, torch.zeros_like(num))


def cg(
    operator: LinearOperator | Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    check_finite: bool = True,
) -> CGResult:
    """Solve ``H x = b`` per sample with conjugate gradients.

    Parameters
    ----------
    operator
        The Hermitian positive-definite ``H``: a :class:`~operators.LinearOperator` (its
        ``forward`` is applied; pass ``A.gram`` for normal equations) or any callable
        ``x -> H x`` that maps a ``(B, ...)`` tensor to one of the same shape, acting on each
        sample independently.
    b
        Right-hand side ``(B, ...)``, real or complex. ``B`` is the number of samples.
    x0
        Optional warm start, same shape and dtype as ``b``. Default zeros. Samples whose
        ``b`` is zero return exactly zero regardless of ``x0``.
    tol
        Relative residual tolerance ``‖b - H x‖ / ‖b‖ <= tol`` per sample (``>= 0``; 0 runs
        ``max_iter`` iterations unless the residual becomes exactly zero).
    max_iter
        Maximum number of iterations (``>= 0``).
    check_finite
        Refuse a ``b`` or ``x0`` with NaN / inf (``ValueError``). The implicit backward passes of
        :mod:`solvers` turn this off, so that a non-finite incoming gradient propagates as it
        would through autograd instead of raising inside ``backward()``.

    Returns
    -------
    CGResult
        ``x`` (shape of ``b``), ``iterations`` (B,), ``residual_norm`` (B,), ``converged``
        (B,), ``rhs_norm`` (B,).

    Notes
    -----
    Inner products are ``Re⟨u, v⟩`` in the real dtype, which is exact for Hermitian ``H``.
    Convergence is checked every iteration (one host synchronisation per iteration). A sample
    whose curvature ``Re⟨p, H p⟩`` is not positive (``H`` not positive definite, or an exactly
    zero search direction) stops without converging rather than producing NaN.
    """
    if not callable(operator):
        raise TypeError(f"operator must be a LinearOperator or a callable x -> H x; got {type(operator).__name__}")
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"b must be a torch.Tensor; got {type(b).__name__}")
    if b.ndim < 1:
        raise ValueError(f"b must have a leading batch dimension, shape (B, ...); got shape {tuple(b.shape)}")
    if not (b.is_floating_point() or b.is_complex()):
        raise TypeError(f"b must be a real or complex floating-point tensor; got dtype {b.dtype}")
    if x0 is not None:
        if not isinstance(x0, torch.Tensor):
            raise TypeError(f"x0 must be a torch.Tensor or None; got {type(x0).__name__}")
        if x0.shape != b.shape or x0.dtype != b.dtype:
            raise ValueError(
                f"x0 must have the shape and dtype of b, {tuple(b.shape)} {b.dtype}; "
                f"got {tuple(x0.shape)} {x0.dtype}"
            )
    if check_finite:
        for name, value in (("b", b), ("x0", x0)):
            if value is not None and not bool(torch.isfinite(value.detach()).all()):
                bad = int((~torch.isfinite(value.detach())).sum())
                raise ValueError(f"{name} must be finite; got {bad} NaN or inf entries in shape {tuple(value.shape)}")
    if isinstance(tol, bool) or not isinstance(tol, Real) or not 0 <= tol < float("inf"):
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0; got {max_iter!r}")

    grad_on = torch.is_grad_enabled()
    differentiable = grad_on and (b.requires_grad or (x0 is not None and x0.requires_grad))

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = operator(v)
        if not isinstance(out, torch.Tensor) or out.shape != v.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"operator must map shape {tuple(v.shape)} to the same shape; got {got}")
        return out

    rhs_norm = batched_real_dot(b, b).sqrt()
    threshold = tol * rhs_norm.detach()
    nonzero_rhs = rhs_norm.detach() > 0

    if x0 is None:
        x = torch.zeros_like(b)
        r = b if differentiable else b.clone()
    else:
        x = x0 * _per_sample(nonzero_rhs, x0)
        hx = apply(x)
        differentiable = differentiable or (grad_on and hx.requires_grad)
        r = b - hx
    rs = batched_real_dot(r, r)
    converged = rs.detach().sqrt() <= threshold
    stopped = converged.clone()
    iterations = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
    p = r if differentiable else r.clone()

    for _ in range(max_iter):
        active = ~stopped
        if not bool(active.any()):
            break
        hp = apply(p)
        if grad_on and hp.requires_grad and not differentiable:
            differentiable = True  # the iterates so far hold no graph, so switching is safe
        php = batched_real_dot(p, hp)
        ok = active & (php.detach() > 0)
        a = _per_sample(_safe_div(rs, php, ok), x)
        if differentiable:
            x = x + a * p
            r = r - a * hp
        else:
            x.addcmul_(p, a)
            r.addcmul_(hp, a, value=-1)
        rs_new = batched_real_dot(r, r)
        beta = _safe_div(rs_new, rs, ok & (rs.detach() > 0))
        if differentiable:
            p = r + _per_sample(beta, p) * p
        else:
            p.mul_(_per_sample(beta, p)).add_(r)
        rs = rs_new
        iterations += active.long()
        converged = converged | (active & (rs.detach().sqrt() <= threshold))
        stopped = stopped | converged | (active & ~ok)

    residual_norm = rs.detach().clamp_min(0).sqrt()
    return CGResult(
        x=x, iterations=iterations, residual_norm=residual_norm, converged=converged, rhs_norm=rhs_norm.detach()
    )
