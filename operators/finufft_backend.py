"""finufft backend of :mod:`operators.nufft`: per-trajectory plans and autograd Functions.

One finufft type-2 plan is made per distinct trajectory ``omega (2, K)`` (radians/pixel, row 0
``k_y``) with ``n_trans`` = the number of images sharing it (coils). ``execute`` is the type-2
transform ``c_k = Σ_n f_n exp(-i ω_k·(n - N//2))`` and ``execute_adjoint`` its exact adjoint, the
type-1 transform with the opposite sign, on the same sorted points. finufft's default mode order
puts frequency index ``n - N//2`` at array index ``n`` along each axis, which is the project's
image origin at pixel ``N // 2``; the first array axis pairs with the first coordinate, so the
trajectory rows go in as ``(k_y, k_x)`` unchanged. No normalisation happens here (the caller
scales by ``(Y X)^{-1/2}``).

Autograd: :func:`type2` and :func:`type1` are linear; the backward of each is the other one
applied to the incoming gradient (the vector-Jacobian product of a complex-linear map ``A`` is
``Aᴴ g``), so gradients reach the image/data and, through the caller's elementwise products,
coil maps and density weights; double backward works the same way.

Processes and threads: OpenMP threads are passed explicitly (``torch.get_num_threads()``). In a
process forked after this module was imported (e.g. a DataLoader worker) finufft runs with one
thread, so that its bundled OpenMP runtime never waits for a thread pool the parent owned. Plans
are tied to the process that made them (:attr:`PlanSet.pid`); plans a forked child inherited are
never freed there (their memory belongs to the parent's allocator state) and never executed. A
lock serialises executions of one plan set (finufft plans are not re-entrant).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import torch

try:  # optional at import time: the gridding backend covers its absence
    import finufft as _finufft
except ImportError:  # pragma: no cover - exercised only without finufft installed
    _finufft = None

_IMPORT_PID = os.getpid()
_INHERITED: list[object] = []  # plans a forked child inherited: kept alive, never destroyed
EPS = {torch.complex64: 1e-6, torch.complex128: 1e-12}  # default finufft tolerance per data dtype
# finufft runs in double precision for complex64 data too: at 192², eps 1e-6, its single-precision
# transforms measured ~1.1e-5 relative error (float32 rounding of the fine-grid coordinates) and
# were slower than the double-precision ones (see operators.nufft).
_PLAN_DTYPE = torch.complex128
# Plan.execute_adjoint arrived in finufft 2.4; older versions get a type-1 plan per trajectory.
_HAS_EXECUTE_ADJOINT = _finufft is not None and hasattr(_finufft.Plan, "execute_adjoint")


def available() -> bool:
    """Whether the ``finufft`` package could be imported."""
    return _finufft is not None


def supports(dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether finufft can transform data of ``dtype`` on ``device``: installed, CPU, complex64
    or complex128."""
    return available() and torch.device(device).type == "cpu" and dtype in EPS


def n_threads() -> int:
    """OpenMP threads for finufft: ``torch.get_num_threads()``, but 1 in a forked child."""
    return max(1, torch.get_num_threads()) if os.getpid() == _IMPORT_PID else 1


def _numpy_points(omega: torch.Tensor) -> Any:
    return omega.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy()


class PlanSet:
    """Type-2 finufft plans, one per trajectory ``omega[p] (2, K)``.

    Parameters
    ----------
    omega
        ``(P, 2, K)`` real, radians/pixel in ``[-π, π]``; rows ``(k_y, k_x)``.
    modes
        ``(Y, X)`` image size (any sizes; the image origin is pixel ``N // 2``).
    n_trans
        Number of images per execution (e.g. coils sharing the trajectory).
    dtype
        Data dtype, ``complex64`` or ``complex128`` (the plans are double precision either way;
        complex64 data are converted one image stack at a time).
    eps
        finufft tolerance (relative l2 error per transform).
    """

    def __init__(self, omega: torch.Tensor, modes: tuple[int, int], n_trans: int, dtype: torch.dtype,
                 eps: float) -> None:
        if _finufft is None:
            raise ImportError("the finufft backend needs the 'finufft' package (pip install finufft)")
        if dtype not in EPS:
            raise TypeError(f"finufft transforms complex64 or complex128 data; got {dtype}")
        self.pid, self.threads = os.getpid(), n_threads()
        self.modes, self.n_trans, self.dtype, self.eps = modes, n_trans, dtype, eps
        self.n_points = int(omega.shape[-1])
        self._points = _numpy_points(omega)  # finufft keeps pointers to these arrays
        self._lock = threading.Lock()
        self._plans = [self._make(2, p) for p in range(self._points.shape[0])]
        self._type1: list[Any] = []  # only without Plan.execute_adjoint, made on first use

    def _make(self, kind: int, p: int) -> Any:
        plan = _finufft.Plan(kind, self.modes, n_trans=self.n_trans, eps=self.eps, dtype="complex128",
                             nthreads=self.threads, isign=-1 if kind == 2 else 1)
        plan.setpts(self._points[p, 0], self._points[p, 1])
        return plan

    def __del__(self) -> None:
        if os.getpid() != getattr(self, "pid", os.getpid()):
            _INHERITED.extend([*getattr(self, "_plans", []), *getattr(self, "_type1", [])])

    def _executor(self, p: int, adjoint: bool) -> Any:
        if not adjoint:
            return self._plans[p].execute
        if _HAS_EXECUTE_ADJOINT:
            return self._plans[p].execute_adjoint
        if not self._type1:
            self._type1 = [self._make(1, q) for q in range(len(self._plans))]
        return self._type1[p].execute

    def usable(self) -> bool:
        """Whether the plans belong to this process (not inherited through ``fork``)."""
        return os.getpid() == self.pid

    def _run(self, source: torch.Tensor, index: Sequence[int], out_shape: tuple[int, ...],
             adjoint: bool) -> torch.Tensor:
        if not self.usable():
            raise RuntimeError("finufft plans were made in another process (inherited through fork)")
        src = source.detach().resolve_conj()
        if src.dtype != self.dtype or src.shape[1] != self.n_trans or len(index) != src.shape[0]:
            raise ValueError(f"plan set for {self.n_trans} transforms of {self.dtype} got "
                             f"{tuple(src.shape)} {src.dtype} with {len(index)} trajectory indices")
        out = torch.empty(out_shape, dtype=self.dtype)
        convert = self.dtype != _PLAN_DTYPE
        buffer = torch.empty(out_shape[1:], dtype=_PLAN_DTYPE) if convert else None
        with self._lock:
            for m, p in enumerate(index):
                data = src[m].to(_PLAN_DTYPE).contiguous().numpy()
                target = buffer if buffer is not None else out[m]
                self._executor(p, adjoint)(data, out=target.numpy())
                if buffer is not None:
                    out[m].copy_(buffer)
        return out

    def forward(self, x: torch.Tensor, index: Sequence[int]) -> torch.Tensor:
        """Type 2: images ``x (M, n_trans, Y, X)`` -> samples ``(M, n_trans, K)``; image ``m``
        uses trajectory ``index[m]``."""
        return self._run(x, index, (x.shape[0], self.n_trans, self.n_points), adjoint=False)

    def adjoint(self, y: torch.Tensor, index: Sequence[int]) -> torch.Tensor:
        """Type 1 (adjoint of :meth:`forward`): ``y (M, n_trans, K)`` -> ``(M, n_trans, Y, X)``."""
        return self._run(y, index, (y.shape[0], self.n_trans, *self.modes), adjoint=True)


class _NUFFT(torch.autograd.Function):
    """Type 2 (``adjoint=False``) or type 1 (``adjoint=True``); the backward is the other type."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, plans: PlanSet, index: Sequence[int], adjoint: bool) -> torch.Tensor:
        ctx.plans, ctx.index, ctx.adjoint = plans, index, adjoint
        return plans.adjoint(x, index) if adjoint else plans.forward(x, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return _NUFFT.apply(grad, ctx.plans, ctx.index, not ctx.adjoint), None, None, None


def type2(x: torch.Tensor, plans: PlanSet, index: Sequence[int]) -> torch.Tensor:
    """Differentiable type-2 NUFFT ``(M, n_trans, Y, X)`` -> ``(M, n_trans, K)`` (unnormalised)."""
    return _NUFFT.apply(x, plans, index, False)


def type1(y: torch.Tensor, plans: PlanSet, index: Sequence[int]) -> torch.Tensor:
    """Differentiable type-1 NUFFT ``(M, n_trans, K)`` -> ``(M, n_trans, Y, X)``, the adjoint of
    :func:`type2` (unnormalised)."""
    return _NUFFT.apply(y, plans, index, True)


def toeplitz_offsets(omega: torch.Tensor, weights: torch.Tensor, index: Sequence[int],
                     im_size: tuple[int, int], eps: float) -> torch.Tensor:
    """``g(d) = Σ_k w_k exp(i ω_k·d)`` on offsets ``d = (-Y..Y-1, -X..X-1)``, differentiable in
    ``weights``.

    Parameters
    ----------
    omega
        ``(P, 2, K)`` trajectories, radians/pixel.
    weights
        ``(M, K)`` complex weights; row ``m`` uses trajectory ``index[m]``.
    index
        ``M`` trajectory indices.
    im_size
        ``(Y, X)``; the output grid is ``(2Y, 2X)`` with offset 0 at ``(Y, X)``.

    Returns
    -------
    ``(M, 2Y, 2X)`` complex (the dtype of ``weights``).
    """
    ny, nx = im_size
    plans = PlanSet(omega, (2 * ny, 2 * nx), 1, weights.dtype, eps)
    return type1(weights.unsqueeze(1), plans, index).squeeze(1)
