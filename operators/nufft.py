"""Non-uniform FFT operators (finufft on the CPU, Kaiser-Bessel gridding otherwise) with a
Toeplitz-embedded normal operator.

Conventions
-----------
* Trajectory ``(*b, T, 2, K)`` in radians/pixel, ``[-π, π)``; row 0 is ``k_y`` (image axis
  ``Y``), row 1 is ``k_x``. Every contrast (and batch entry) may have its own trajectory; coils
  (and batch entries that share a trajectory) ride along. ``π`` itself is accepted (up to float
  rounding): it is the same frequency as ``-π``.
* Scaling and centring match the centred orthonormal FFT of :mod:`operators.fft`: the image
  origin is pixel ``N // 2`` and ``(N x)(ω) = (Y X)^{-1/2} Σ_n x_n exp(-i ω·(n - N//2))``; on grid
  frequencies ``ω = 2π (m - N//2) / N`` the NUFFT is the Cartesian FFT up to the NUFFT error.
* Density compensation ``w`` (``(*b, T, K)``, real, non-negative) weights the data,
  ``A = W^{1/2} N``: ``A x = sqrt(w) · N x``, ``Aᴴ y = Nᴴ(sqrt(w) · y)``. ``A``, ``Aᴴ`` stay an exact
  adjoint pair and ``AᴴA = Nᴴ W N`` (what the Toeplitz kernel embeds). Measured data must be
  weighted the same way, ``sqrt(w) · k`` (:meth:`NUFFTOp.weight`), before being paired with ``A``
  (e.g. in ``data_consistency``). Gradients reach the image/data, ``w`` and ``csm`` through
  autograd (``w > 0`` where gradients are wanted: ``sqrt`` has an infinite slope at 0); none
  reaches the trajectory.
* ``gram`` uses Toeplitz embedding (:mod:`operators.toeplitz`): a real kernel per ``(b, T)``
  trajectory on a ``2Y x 2X`` grid, computed on the first ``gram`` call and cached per
  dtype/device, applied one contrast at a time.

Backends (``backend=``)
-----------------------
``"finufft"`` (:mod:`operators.finufft_backend`): the finufft package, type-2 forward and its
exact adjoint (type 1) on plans made once per trajectory and per process, tolerance ``eps``
(default 1e-6 for complex64, 1e-12 for complex128), wrapped in autograd Functions whose backward
is the adjoint transform. CPU, complex64/complex128 only. ``"gridding"``
(:mod:`operators.gridding`): the project's own Kaiser-Bessel gridding in plain PyTorch (any
device; ``oversampling``/``numpoints`` apply to it only). ``"auto"`` (default) picks finufft for
CPU tensors when it is importable, gridding otherwise, per call.

Decision, by measurement (``OMP_NUM_THREADS=1 python -m benchmarks.operators``; 192², 8 coils,
5 contrasts, 48 radial spokes x 384 per contrast, complex64 data, one thread; ratios are
interleaved medians of one run, wall-clock / one-thread CPU time, two runs on a shared 2-core
machine; see ``benchmarks/results/operators.md``):

* finufft is the CPU backend. ``MultiCoilNUFFTOp`` forward / finufft forward 1.06-1.20 /
  1.04-1.10, adjoint / finufft adjoint 1.00-1.13 / 1.04-1.08, against finufft itself with plans
  made once at eps 1e-6 in the faster of its precisions (double; against its single-precision
  plans the operator takes 0.66-0.70x their time). The gridding took 3.3-3.9x (forward) and
  4.9-6.0x (adjoint) finufft's time and stays as the fallback.
* finufft runs in double precision even for complex64 data (converted one image stack at a
  time): at eps 1e-6 its single-precision transforms had 1.1e-5 relative error against the exact
  DFT (float32 rounding of the fine-grid coordinates, ~N·2⁻²³) and took 1.6x the time of the
  double-precision ones. Error against the exact DFT: 1.1e-6 forward / 1.0e-6 adjoint (the
  gridding: 7.1e-6 / 6.9e-6).
* Plans are cached per operator and per process: building them for the 5 contrasts took
  4-19 ms = 0.03-0.10x one forward, a cost every call would pay otherwise.
* Toeplitz gram one contrast at a time: 1.07-1.16 / 1.17-1.18x its own padded FFTs per contrast;
  the former single ``(T, C, 2Y, 2X)`` product took 1.9-2.5x as long as the per-contrast gram.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from operators import finufft_backend
from operators._validation import require_complex, require_finite, require_tensor, shape_str
from operators.gridding import Gridding, gridding_circulant, real_dtype
from operators.linear_operator import LinearOperator, ProductOperator
from operators.sensitivity import SensitivityOp, check_csm
from operators.toeplitz import ToeplitzWithDensity, apply_toeplitz, kernel_from_circulant, kernel_index

_PI_TOLERANCE = 1e-6  # relative slack on |ω| <= π for float rounding
BACKENDS = ("auto", "finufft", "gridding")
_MAX_PLAN_SETS = 4  # plan sets kept per operator (one per coil count / dtype in use)


def _broadcast_batch(shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    try:
        return tuple(torch.broadcast_shapes(*shapes.values()))
    except RuntimeError:
        listing = ", ".join(f"{k} {shape_str(v)}" for k, v in shapes.items())
        raise ValueError(f"the batch dims must broadcast against each other; got {listing}") from None


def check_trajectory(trajectory: object) -> torch.Tensor:
    """Validate a trajectory ``(*b, T, 2, K)`` real, radians/pixel in ``[-π, π)``."""
    trajectory = require_tensor("trajectory", trajectory)
    if not trajectory.is_floating_point():
        raise TypeError(f"trajectory must be a real floating tensor (radians/pixel); got {trajectory.dtype}")
    if trajectory.ndim < 3 or trajectory.shape[-2] != 2:
        raise ValueError(f"trajectory must have shape (*b, T, 2, K); got {shape_str(trajectory.shape)}")
    if trajectory.shape[-1] == 0:
        raise ValueError("trajectory must have at least one sample (K >= 1); got K = 0")
    if not bool(torch.isfinite(trajectory.detach()).all()):
        raise ValueError("trajectory must be finite; got NaN or inf values")
    lo, hi = float(trajectory.detach().min()), float(trajectory.detach().max())
    if max(-lo, hi) > math.pi * (1 + _PI_TOLERANCE):
        raise ValueError(f"trajectory must be in radians/pixel within [-π, π) = [-3.1416, 3.1416); "
                         f"got values in [{lo:.4f}, {hi:.4f}]")
    return trajectory


def check_density(density: object, trajectory: torch.Tensor) -> torch.Tensor:
    """Validate density weights ``(*b, T, K)`` (real) against a trajectory ``(*b, T, 2, K)``."""
    density = require_tensor("density", density)
    if not density.is_floating_point():
        raise TypeError(f"density must be a real floating tensor; got {density.dtype}")
    t, k = trajectory.shape[-3], trajectory.shape[-1]
    if density.ndim < 2 or tuple(density.shape[-2:]) != (t, k):
        raise ValueError(f"density must have shape (*b, T, K) with T, K = {(t, k)} of the trajectory; "
                         f"got {shape_str(density.shape)}")
    if bool((density.detach() < 0).any()) or not bool(torch.isfinite(density.detach()).all()):
        raise ValueError("density must be finite and non-negative")
    return density


def _check_settings(backend: object, eps: object) -> tuple[str, float | None]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "finufft" and not finufft_backend.available():
        raise ValueError("backend='finufft' needs the 'finufft' package, which is not importable; "
                         "install it or use backend='auto' or 'gridding'")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float))
                            or not 1e-15 < float(eps) < 1e-1):
        raise ValueError(f"eps must be None or a number in (1e-15, 0.1); got {eps!r}")
    return str(backend), None if eps is None else float(eps)


class NUFFTOp(LinearOperator):
    """Non-uniform FFT of coil images, one trajectory per contrast (and batch entry).

    Parameters
    ----------
    trajectory
        ``(*b, T, 2, K)`` real, radians/pixel in ``[-π, π)``; rows ``(k_y, k_x)``.
    im_size
        ``(Y, X)`` image size.
    density
        Optional density-compensation weights ``(*b, T, K)``, real, non-negative; the operator
        becomes ``A = W^{1/2} N`` (see the module docstring).
    oversampling
        Grid oversampling of the gridding backend (>= 1; grid ``ceil(oversampling · N)``).
    numpoints
        Kaiser-Bessel interpolation neighbours per dimension (gridding backend).
    backend
        ``"auto"`` (finufft for CPU tensors when importable, else gridding), ``"finufft"`` or
        ``"gridding"``.
    eps
        finufft tolerance; ``None``: 1e-6 for complex64, 1e-12 for complex128.

    Notes
    -----
    forward: coil images ``x (*b, T, C, Y, X)`` complex -> ``(*b, T, C, K)``; adjoint the reverse.
    ``C`` is any number of images sharing the trajectory (coils; use ``C = 1`` for one image).
    ``nufft @ SensitivityOp(csm)`` is :class:`MultiCoilNUFFTOp`. The batch dims of
    ``trajectory`` and ``density`` must broadcast to those of ``x`` (a shared trajectory serves a
    whole batch). Any complex dtype works; the trajectory and density are cast to the matching
    real dtype.
    """

    def __init__(self, trajectory: torch.Tensor, im_size: Sequence[int], density: torch.Tensor | None = None,
                 oversampling: float = 2.0, numpoints: int = 6, backend: str = "auto",
                 eps: float | None = None) -> None:
        super().__init__()
        self.trajectory = check_trajectory(trajectory)
        im = tuple(int(n) for n in im_size)
        if len(im) != 2 or min(im) < 1:
            raise ValueError(f"im_size must be (Y, X) with positive sizes; got {tuple(im_size)}")
        if not float(oversampling) >= 1.0:
            raise ValueError(f"oversampling must be >= 1; got {oversampling}")
        if int(numpoints) < 1:
            raise ValueError(f"numpoints must be >= 1; got {numpoints}")
        self.backend, self.eps = _check_settings(backend, eps)
        self.im_size: tuple[int, int] = (im[0], im[1])
        self.grid_size = tuple(max(n, math.ceil(float(oversampling) * n)) for n in im)
        self.numpoints = int(numpoints)
        self.density = None if density is None else check_density(density, self.trajectory)
        shapes = {"trajectory": tuple(self.trajectory.shape[:-3])}
        if self.density is not None:
            shapes["density"] = tuple(self.density.shape[:-2])
        self.batch_shape = _broadcast_batch(shapes)
        self.n_times = int(self.trajectory.shape[-3])
        self.n_samples = int(self.trajectory.shape[-1])
        self._scale = 1.0 / math.sqrt(math.prod(self.im_size))  # orthonormal, as the Cartesian FFT
        self._gridding = Gridding(self.im_size, self.grid_size, self.numpoints, (im[0] // 2, im[1] // 2))
        self._kernel_cache: dict[tuple, torch.Tensor] = {}
        self._interp_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._plan_cache: dict[tuple, finufft_backend.PlanSet] = {}

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_plan_cache"] = {}  # finufft plans hold C pointers: rebuilt on demand
        return state

    # ------------------------------------------------------------------ helpers
    def _check_batch(self, name: str, batch: tuple[int, ...]) -> None:
        try:
            ok = tuple(torch.broadcast_shapes(self.batch_shape, batch)) == batch
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"the batch dims {shape_str(batch)} of {name} must match the batch dims "
                             f"{shape_str(self.batch_shape)} of the trajectory/density (or those be shared)")

    def _check_image(self, x: object, name: str = "x") -> torch.Tensor:
        x = require_complex(name, x)
        if x.ndim < 4 or tuple(x.shape[-2:]) != self.im_size or x.shape[-4] != self.n_times:
            raise ValueError(f"{name} must have shape (*b, T, C, Y, X) with T = {self.n_times} of the "
                             f"trajectory and Y, X = {self.im_size}; got {shape_str(x.shape)}")
        self._check_batch(name, tuple(x.shape[:-4]))
        return x

    def _check_data(self, y: object, name: str = "y") -> torch.Tensor:
        y = require_complex(name, y)
        if y.ndim < 3 or y.shape[-1] != self.n_samples or y.shape[-3] != self.n_times:
            raise ValueError(f"{name} must have shape (*b, T, C, K) with T, K = "
                             f"{(self.n_times, self.n_samples)} of the trajectory; got {shape_str(y.shape)}")
        self._check_batch(name, tuple(y.shape[:-3]))
        return y

    def uses_finufft(self, dtype: torch.dtype, device: torch.device | str) -> bool:
        """Whether data of ``dtype`` on ``device`` go through finufft (else the gridding)."""
        if self.backend == "gridding":
            return False
        ok = finufft_backend.supports(dtype, device)
        if self.backend == "finufft" and not ok:
            raise ValueError(f"backend='finufft' transforms CPU complex64/complex128 tensors; got "
                             f"{dtype} on {torch.device(device)}")
        return ok

    def _trajectories(self) -> torch.Tensor:
        return self.trajectory.detach().reshape(-1, 2, self.n_samples)

    def _index(self, batch: tuple[int, ...]) -> list[int]:
        return kernel_index(tuple(self.trajectory.shape[:-3]), batch, self.n_times)

    def _eps(self, dtype: torch.dtype) -> float:
        return self.eps if self.eps is not None else finufft_backend.EPS[dtype]

    def _plans(self, n_trans: int, dtype: torch.dtype) -> finufft_backend.PlanSet:
        """finufft plans of the trajectory for ``n_trans`` images, cached per process."""
        cache = self._plan_cache
        if any(not plans.usable() for plans in cache.values()):
            cache.clear()  # inherited through fork: make this process's own
        key = (n_trans, dtype, self._eps(dtype), finufft_backend.n_threads(), self.trajectory._version)
        plans = cache.get(key)
        if plans is None:
            plans = finufft_backend.PlanSet(self._trajectories(), self.im_size, n_trans, dtype, self._eps(dtype))
            if len(cache) >= _MAX_PLAN_SETS:
                cache.pop(next(iter(cache)))
            cache[key] = plans
        return plans

    def _omega(self, batch: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        traj = self.trajectory.detach().to(device=device, dtype=real_dtype(dtype))
        return traj.expand(*batch, self.n_times, 2, self.n_samples).reshape(-1, 2, self.n_samples)

    def _interpolation(self, batch: tuple[int, ...], dtype: torch.dtype,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Gridding indices and weights for images with batch dims ``batch``, cached (one entry:
        ``36 · prod(batch) · T · K`` int32 indices and complex weights)."""
        key = (batch, dtype, str(device), self.trajectory._version)
        if key not in self._interp_cache:
            with torch.no_grad():
                interp = self._gridding.interpolation(self._omega(batch, dtype, device), dtype)
            self._interp_cache = {key: interp}
        return self._interp_cache[key]

    def _transform(self, data: torch.Tensor, batch: tuple[int, ...], adjoint: bool) -> torch.Tensor:
        """Unnormalised NUFFT of ``(M, C, Y, X)`` images (or its adjoint of ``(M, C, K)`` data)."""
        if self.uses_finufft(data.dtype, data.device):
            plans, index = self._plans(data.shape[1], data.dtype), self._index(batch)
            return (finufft_backend.type1 if adjoint else finufft_backend.type2)(data, plans, index)
        interp = self._interpolation(batch, data.dtype, data.device)
        return self._gridding.adjoint(data, interp) if adjoint else self._gridding.forward(data, interp)

    def _sqrt_density(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        if self.density is None:
            return None
        return self.density.to(device=device, dtype=real_dtype(dtype)).sqrt().unsqueeze(-2)

    def weight(self, k: torch.Tensor) -> torch.Tensor:
        """Apply ``W^{1/2}`` to measured data ``k (*b, T, C, K)`` (identity without density).

        Use it on raw k-space before pairing it with this operator, e.g. ``A.H(A.weight(k))``.
        """
        k = self._check_data(k, "k")
        sqrt_w = self._sqrt_density(k.dtype, k.device)
        return k if sqrt_w is None else k * sqrt_w

    # ------------------------------------------------------------------ operator
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``sqrt(w) · N x``: coil images ``(*b, T, C, Y, X)`` -> k-space ``(*b, T, C, K)``."""
        x = require_finite("x", self._check_image(x))
        batch, c = tuple(x.shape[:-4]), x.shape[-3]
        k = self._transform(x.reshape(-1, c, *self.im_size), batch, adjoint=False)
        k = k.reshape(*batch, self.n_times, c, self.n_samples)
        sqrt_w = self._sqrt_density(x.dtype, x.device)
        scale = self._scale if sqrt_w is None else self._scale * sqrt_w
        return k * scale

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Nᴴ(sqrt(w) · y)``: k-space ``(*b, T, C, K)`` -> coil images ``(*b, T, C, Y, X)``."""
        y = require_finite("y", self._check_data(y))
        batch, c = tuple(y.shape[:-3]), y.shape[-2]
        sqrt_w = self._sqrt_density(y.dtype, y.device)
        y = y * (self._scale if sqrt_w is None else self._scale * sqrt_w)
        x = self._transform(y.reshape(-1, c, self.n_samples), batch, adjoint=True)
        return x.reshape(*batch, self.n_times, c, *self.im_size)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``Nᴴ W N x`` by Toeplitz embedding: coil images ``(*b, T, C, Y, X)`` -> same shape."""
        x = self._check_image(x)
        kernel = self.toeplitz_kernel(x.dtype, x.device)
        if self.density is not None and self.density.requires_grad and torch.is_grad_enabled():
            def make(w: torch.Tensor) -> torch.Tensor:
                return self._compute_kernel(w, x.dtype, x.device)
            return ToeplitzWithDensity.apply(x, self.density, kernel, make)
        return apply_toeplitz(x, kernel)

    # ------------------------------------------------------------------ Toeplitz
    def toeplitz_kernel(self, dtype: torch.dtype = torch.complex64,
                        device: torch.device | str | None = None) -> torch.Tensor:
        """The cached real Toeplitz kernel ``(*b, T, 2Y, 2X)`` for images of ``dtype``.

        Computed once (without autograd graph) per dtype and device and reused by every
        ``gram`` call; recomputed only if ``trajectory``/``density`` are modified in place.
        """
        device = torch.device(device) if device is not None else self.trajectory.device
        dens = self.density
        dens_key = None if dens is None else (id(dens), dens._version)
        key = (dtype, str(device), self.trajectory._version, dens_key)
        kernel = self._kernel_cache.get(key)
        if kernel is None:
            with torch.no_grad():
                kernel = self._compute_kernel(None if dens is None else dens.detach(), dtype, device)
            self._kernel_cache = {key: kernel}
        return kernel

    def _compute_kernel(self, density: torch.Tensor | None, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor:
        """Real Fourier-domain kernel ``(*b, T, 2Y, 2X)`` of the circulant embedding of
        ``Nᴴ W N`` (differentiable in ``density``)."""
        ny, nx = self.im_size
        batch = self.batch_shape
        n = math.prod(batch) * self.n_times
        if density is None:
            weights = torch.ones(n, self.n_samples, dtype=dtype, device=device)
        else:
            w = density.to(device=device, dtype=real_dtype(dtype)).expand(*batch, self.n_times, self.n_samples)
            weights = w.reshape(n, self.n_samples).to(dtype)
        if self.uses_finufft(dtype, device):
            offsets = finufft_backend.toeplitz_offsets(self._trajectories(), weights, self._index(batch),
                                                       self.im_size, self._eps(dtype))
            circ = torch.fft.ifftshift(offsets, dim=(-2, -1))  # offset 0 (at (Y, X)) to index 0
        else:
            circ = gridding_circulant(self._gridding, self._omega(batch, dtype, device), weights)
        kernel = kernel_from_circulant(circ / (ny * nx))
        return kernel.reshape(*batch, self.n_times, 2 * ny, 2 * nx)

    def extra_repr(self) -> str:
        return (f"im_size={self.im_size}, n_times={self.n_times}, n_samples={self.n_samples}, "
                f"batch_shape={self.batch_shape}, density={self.density is not None}, "
                f"backend={self.backend!r}")


class MultiCoilNUFFTOp(ProductOperator):
    """Multi-coil non-Cartesian encoding ``A = W^{1/2} N S``, the composition ``nufft @ sensitivity``.

    Parameters
    ----------
    csm
        Complex coil maps ``(*b, C, Y, X)``; gradients reach them through autograd.
    trajectory
        ``(*b, T, 2, K)`` (or ``(T, 2, K)`` shared), radians/pixel in ``[-π, π)``, rows
        ``(k_y, k_x)``; a different trajectory per contrast is allowed.
    density
        Optional density weights ``(*b, T, K)`` (or ``(T, K)``); see :class:`NUFFTOp`.
    oversampling, numpoints, backend, eps
        NUFFT settings, see :class:`NUFFTOp`.

    Notes
    -----
    forward: ``x (*b, T, Y, X)`` -> ``(*b, T, C, K)``; adjoint: ``(*b, T, C, K)`` ->
    ``(*b, T, Y, X)``; ``gram``: ``Sᴴ (Nᴴ W N) S x`` through the composition's gram, i.e. with
    the Toeplitz-embedded ``Nᴴ W N``. ``nufft`` (the outer factor) and ``sensitivity`` (the inner
    one) name the factors and may be reassigned. The image must have the dtype of ``csm``;
    measured data are weighted with :meth:`weight`.
    """

    _FACTORS = {"nufft": "outer", "sensitivity": "inner"}

    def __init__(self, csm: torch.Tensor, trajectory: torch.Tensor, density: torch.Tensor | None = None,
                 oversampling: float = 2.0, numpoints: int = 6, backend: str = "auto",
                 eps: float | None = None) -> None:
        csm = check_csm(csm)
        nufft = NUFFTOp(trajectory, tuple(csm.shape[-2:]), density=density, oversampling=oversampling,
                        numpoints=numpoints, backend=backend, eps=eps)
        super().__init__(nufft, SensitivityOp(csm))
        self.batch_shape = _broadcast_batch({"csm": tuple(csm.shape[:-3]),
                                             "trajectory/density": nufft.batch_shape})

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(self._FACTORS.get(name, name), value)

    @property
    def nufft(self) -> NUFFTOp:
        return self.outer  # type: ignore[return-value]

    @property
    def sensitivity(self) -> SensitivityOp:
        return self.inner  # type: ignore[return-value]

    @property
    def csm(self) -> torch.Tensor:
        return self.sensitivity.csm

    def _check_image(self, x: object) -> torch.Tensor:
        x = require_complex("x", x)
        (ny, nx), t = self.nufft.im_size, self.nufft.n_times
        if x.ndim < 3 or tuple(x.shape[-2:]) != (ny, nx) or x.shape[-3] != t:
            raise ValueError(f"x must have shape (*b, T, Y, X) with T = {t} of the trajectory and "
                             f"Y, X = {(ny, nx)} of the coil maps; got {shape_str(x.shape)}")
        return x

    def weight(self, k: torch.Tensor) -> torch.Tensor:
        """``sqrt(w) · k`` for measured data ``k (*b, T, C, K)``; see :meth:`NUFFTOp.weight`."""
        return self.nufft.weight(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image series ``(*b, T, Y, X)`` -> multi-coil k-space ``(*b, T, C, K)``."""
        return super().forward(require_finite("x", self._check_image(x)))

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``AᴴA x`` via Toeplitz embedding, ``(*b, T, Y, X)`` -> same shape."""
        return super().gram(self._check_image(x))

    def extra_repr(self) -> str:
        return f"n_coils={self.csm.shape[-3]}, batch_shape={self.batch_shape}"
