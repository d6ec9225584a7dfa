"""Data-consistency layer with implicit-differentiation backward.

Per sample (index of the leading dimension) the layer returns the minimiser of

    ‖A y − k‖² + Σᵢ λᵢ ‖y − yᵢ‖²,

i.e. the solution of ``(AᴴA + Σλᵢ I) y = Aᴴk + Σλᵢ yᵢ`` computed by :func:`solvers.cg` with the
operator's fast ``gram``.

Implicit backward (default). The forward solve runs without autograd, so its memory does not
depend on the number of CG iterations. With ``H = AᴴA + Σλᵢ I`` and the residual
``r(θ) = H y* − Aᴴk − Σλᵢ yᵢ`` (``θ`` = k, every λᵢ and yᵢ, and every tensor the operator is
built from, ``y*`` held fixed), the implicit function theorem gives ``dy* = −H⁻¹ dr``. The layer
therefore returns ``y* + S(r(θ))`` where ``S`` is an autograd function whose value is zero (so
the output is exactly the CG solution) and whose backward applies ``−H⁻¹`` by one more CG solve:
``g = H⁻¹ ∂L/∂y``. Ordinary autograd of ``r`` then delivers ``k ← A g``, ``yᵢ ← λᵢ g``,
``λᵢ ← Re⟨yᵢ − y, g⟩`` and, for coil maps or NUFFT density weights, ``−Re⟨g, ∂r/∂θ⟩`` (for a
Cartesian SENSE operator this is eq. (18) of the PINQI paper). Only the parts of ``r`` that
depend on something requiring grad are built; the graph of ``r`` holds one ``gram`` and one
adjoint evaluation, independent of the iteration count. Double backward is not supported.

Unrolled backward (``implicit=False``): CG runs with autograd recording every iteration
(memory grows linearly with the iterations); kept for comparison and tests.

Unrolled gradients are those of the truncated algorithm: the derivatives of the CG iterates
converge later than the iterates themselves, so with a tolerance-based stop they can differ
noticeably from the exact (implicit) gradient; they agree once CG runs well past convergence.

Non-convergence is reported through the ``logging`` logger ``solvers.data_consistency`` (level
WARNING; DEBUG when ``tol == 0``, i.e. a fixed iteration count), never as a Python warning, and
the CG results are available with ``return_info=True``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal, overload

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from operators.linear_operator import LinearOperator
from solvers.cg import CGResult, cg

__all__ = ["DataConsistencyInfo", "data_consistency", "operator_tensors"]

logger = logging.getLogger(__name__)

Lambda = float | torch.Tensor


@dataclass
class DataConsistencyInfo:
    """CG outcomes of one :func:`data_consistency` call.

    Attributes
    ----------
    forward
        Result of the forward solve.
    backward
        Result of the implicit backward solve; ``None`` until backward has run (and always for
        ``implicit=False``).
    """

    forward: CGResult
    backward: CGResult | None = None


def operator_tensors(operator: nn.Module) -> list[torch.Tensor]:
    """Tensors that require grad and that ``operator`` is built from.

    Asks :meth:`~operators.LinearOperator.tensors` (which recurses through compositions, sums,
    scalings and adjoints); for another ``nn.Module``, its parameters and buffers. Each tensor
    once.

    Parameters
    ----------
    operator
        A :class:`~operators.LinearOperator` (any ``nn.Module``).

    Returns
    -------
    List of tensors with ``requires_grad`` (coil maps, density weights, scales, ...).
    """
    if isinstance(operator, LinearOperator):
        tensors = operator.tensors()
    else:
        tensors = [*operator.parameters(), *operator.buffers()]
    found = {id(t): t for t in tensors if t.requires_grad}
    return list(found.values())


class _ImplicitSolve(torch.autograd.Function):
    """Value 0; backward maps the incoming gradient ``v`` to ``−H⁻¹ v`` (one CG solve)."""

    @staticmethod
    def forward(ctx: Any, residual: torch.Tensor, solve: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.solve = solve
        return torch.zeros_like(residual)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.solve(grad), None


def _log_non_convergence(stage: str, result: CGResult, tol: float) -> None:
    """WARNING when CG stopped short of ``tol``; DEBUG for ``tol == 0`` (a fixed iteration count
    was asked for, so stopping at ``max_iter`` is intended)."""
    if bool(result.converged.all()):
        return
    failed = ~result.converged
    logger.log(
        logging.WARNING if tol > 0 else logging.DEBUG,
        "data_consistency %s: CG did not reach tol=%.3g for %d of %d samples after %d iterations "
        "(worst relative residual %.3g)",
        stage,
        tol,
        int(failed.sum()),
        failed.numel(),
        int(result.iterations.max()),
        float(result.relative_residual[failed].max()),
    )


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite; got a tensor of shape {tuple(t.shape)} with NaN or inf entries")


def _lambda(value: Any, index: int, batch: int, ndim: int, real_dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Validate λᵢ; return it as a real tensor that broadcasts against the solution."""
    name = f"regs[{index}] λ"
    if isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
        raise TypeError(f"{name} must be a float, a 0-d tensor or a (B,) tensor; got {type(value).__name__}")
    if not isinstance(value, torch.Tensor):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
        return torch.tensor(float(value), dtype=real_dtype, device=device)
    if value.is_complex() or not value.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor; got dtype {value.dtype}")
    if value.shape not in ((), (batch,)):
        raise ValueError(f"{name} must be a scalar or have shape (B,) = ({batch},); got shape {tuple(value.shape)}")
    detached = value.detach()
    if not bool(torch.isfinite(detached).all()) or bool((detached < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0; got {detached.tolist()}")
    lam = value.to(device=device, dtype=real_dtype)
    return lam.reshape(batch, *([1] * (ndim - 1))) if lam.ndim == 1 else lam


@overload
def data_consistency(
    A: LinearOperator,
    k: torch.Tensor,
    regs: Sequence[tuple[Lambda, torch.Tensor]],
    x0: torch.Tensor | None = ...,
    tol: float = ...,
    max_iter: int = ...,
    implicit: bool = ...,
    backward_tol: float | None = ...,
    backward_max_iter: int | None = ...,
    return_info: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def data_consistency(
    A: LinearOperator,
    k: torch.Tensor,
    regs: Sequence[tuple[Lambda, torch.Tensor]],
    x0: torch.Tensor | None = ...,
    tol: float = ...,
    max_iter: int = ...,
    implicit: bool = ...,
    backward_tol: float | None = ...,
    backward_max_iter: int | None = ...,
    *,
    return_info: Literal[True],
) -> tuple[torch.Tensor, DataConsistencyInfo]: ...


def data_consistency(
    A: LinearOperator,
    k: torch.Tensor,
    regs: Sequence[tuple[Lambda, torch.Tensor]],
    x0: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    implicit: bool = True,
    backward_tol: float | None = None,
    backward_max_iter: int | None = None,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, DataConsistencyInfo]:
    """Solve ``(AᴴA + Σλᵢ I) y = Aᴴk + Σλᵢ yᵢ`` per sample, differentiably.

    Parameters
    ----------
    A
        Encoding operator, e.g. ``MultiCoilCartesianOp`` or ``MultiCoilNUFFTOp``; ``A.gram`` is
        used for ``AᴴA``. Gradients reach every tensor it is built from (csm, density).
    k
        Measured data in the operator's range, e.g. ``(B, T, C, Y, X)`` Cartesian or
        ``(B, T, C, K)`` radial; finite.
    regs
        Sequence of ``(λᵢ, yᵢ)``: ``λᵢ >= 0`` a Python float, a 0-d tensor or a ``(B,)`` tensor
        (one weight per sample); ``yᵢ`` of the solution's shape and dtype (``Aᴴk``'s, e.g.
        ``(B, T, Y, X)``). May be empty if ``AᴴA`` is positive definite.
    x0
        Warm start of the forward CG, solution-shaped; treated as a constant in implicit mode.
    tol, max_iter
        Forward CG relative-residual tolerance and iteration limit.
    implicit
        ``True``: implicit-differentiation backward (memory independent of iterations);
        ``False``: autograd through the unrolled CG iterations.
    backward_tol, backward_max_iter
        Backward CG tolerance (relative to the norm of the incoming gradient) and iteration
        limit; default ``tol`` and ``max_iter``.
    return_info
        Also return a :class:`DataConsistencyInfo` with the CG results (the backward entry is
        filled in when backward runs).

    Returns
    -------
    y
        Solution, shape and dtype of ``Aᴴk``; or ``(y, info)`` if ``return_info``.
    """
    if not isinstance(A, LinearOperator):
        raise TypeError(f"A must be a LinearOperator; got {type(A).__name__}")
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"k must be a torch.Tensor; got {type(k).__name__}")
    if isinstance(regs, (torch.Tensor, str)) or not isinstance(regs, Sequence):
        raise TypeError(f"regs must be a sequence of (λ, y_reg) pairs; got {type(regs).__name__}")
    backward_tol = tol if backward_tol is None else backward_tol
    backward_max_iter = max_iter if backward_max_iter is None else backward_max_iter
    for name, value in (("tol", tol), ("backward_tol", backward_tol)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    for name, value in (("max_iter", max_iter), ("backward_max_iter", backward_max_iter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    _check_finite("k", k.detach())

    try:
        ahk = A.H(k)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"k of shape {tuple(k.shape)} does not fit the operator {type(A).__name__}: {err}") from err
    shape, dtype, batch = ahk.shape, ahk.dtype, ahk.shape[0]
    real_dtype = ahk.real.dtype

    lams: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    for i, reg in enumerate(regs):
        if not isinstance(reg, (tuple, list)) or len(reg) != 2:
            raise TypeError(f"regs[{i}] must be a pair (λ, y_reg); got {type(reg).__name__}")
        lam, target = reg
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"regs[{i}] y_reg must be a torch.Tensor; got {type(target).__name__}")
        if target.shape != shape or target.dtype != dtype:
            raise ValueError(
                f"regs[{i}] y_reg must have the solution's shape and dtype {tuple(shape)} {dtype}; "
                f"got {tuple(target.shape)} {target.dtype}"
            )
        _check_finite(f"regs[{i}] y_reg", target.detach())
        lams.append(_lambda(lam, i, batch, len(shape), real_dtype, ahk.device))
        targets.append(target)
    if x0 is not None and (not isinstance(x0, torch.Tensor) or x0.shape != shape or x0.dtype != dtype):
        got = f"{tuple(x0.shape)} {x0.dtype}" if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0 must have the solution's shape and dtype {tuple(shape)} {dtype}; got {got}")
    if x0 is not None:
        _check_finite("x0", x0.detach())

    lam_sum = sum(lams, torch.zeros((), dtype=real_dtype, device=ahk.device))
    lam_sum_b = lam_sum.expand(batch, *([1] * (len(shape) - 1)))
    if not bool((lam_sum_b.detach() > 0).all()):
        logger.info("data_consistency: Σλ = 0 for some samples; relying on AᴴA being positive definite")

    if not implicit:
        lam_sum_grad = lam_sum_b.to(dtype)

        def normal(x: torch.Tensor) -> torch.Tensor:
            return torch.addcmul(A.gram(x), x, lam_sum_grad) if lams else A.gram(x)

        rhs = ahk
        for lam, target in zip(lams, targets):
            rhs = rhs + lam * target
        result = cg(normal, rhs, x0, tol=tol, max_iter=max_iter, check_finite=False)
        _log_non_convergence("forward", result, tol)
        info = DataConsistencyInfo(forward=result)
        return (result.x, info) if return_info else result.x

    lam_sum_c = lam_sum_b.detach().to(dtype)

    def normal_const(x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(A.gram(x), x, lam_sum_c) if lams else A.gram(x)

    with torch.no_grad():
        rhs = ahk.detach().clone()
        for lam, target in zip(lams, targets):
            rhs.add_(lam.detach() * target.detach())
        result = cg(normal_const, rhs, None if x0 is None else x0.detach(), tol=tol, max_iter=max_iter, check_finite=False)
    _log_non_convergence("forward", result, tol)
    info = DataConsistencyInfo(forward=result)
    y_star = result.x

    op_tensors = operator_tensors(A) if torch.is_grad_enabled() else []
    residual: torch.Tensor | None = None
    if torch.is_grad_enabled():
        # Only the terms of r(θ) = H y* − Aᴴk − Σλᵢyᵢ that depend on something requiring grad.
        terms: list[torch.Tensor] = []
        if op_tensors:
            terms.append(A.gram(y_star))
        if ahk.requires_grad:
            terms.append(-ahk)
        for lam, target in zip(lams, targets):
            if lam.requires_grad or target.requires_grad:
                terms.append(lam * (y_star - target))
        terms = [t for t in terms if t.requires_grad]
        if terms:
            residual = terms[0]
            for t in terms[1:]:
                residual = residual + t

    if residual is None:
        return (y_star, info) if return_info else y_star

    def solve(grad: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            back = cg(normal_const, grad, tol=backward_tol, max_iter=backward_max_iter, check_finite=False)
        info.backward = back
        _log_non_convergence("backward", back, backward_tol)
        return back.x

    y = y_star + _ImplicitSolve.apply(residual, solve)
    return (y, info) if return_info else y
