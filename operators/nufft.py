"""Non-uniform FFT operators (Kaiser-Bessel gridding) with a Toeplitz-embedded normal operator.

Conventions
-----------
* Trajectory ``(*b, T, 2, K)`` in radians/pixel, ``[-π, π)``; row 0 is ``k_y`` (image axis
  ``Y``), row 1 is ``k_x``. Every contrast (and batch entry) may have its own trajectory; ``b·T``
  is folded into one batch dimension, coils ride along. ``π`` itself is accepted (up to float
  rounding): it is the same frequency as ``-π``.
* Scaling and centring match the centred orthonormal FFT of :mod:`operators.fft`: the image
  origin is pixel ``N // 2`` and ``(N x)(ω) = (Y X)^{-1/2} Σ_n x_n exp(-i ω·(n - N//2))``; on grid
  frequencies ``ω = 2π (m - N//2) / N`` the NUFFT is the Cartesian FFT up to the gridding error
  (~1e-5 relative with 6 neighbours and a 2x grid).
* Density compensation ``w`` (``(*b, T, K)``, real, non-negative) weights the data,
  ``A = W^{1/2} N``: ``A x = sqrt(w) · N x``, ``Aᴴ y = Nᴴ(sqrt(w) · y)``. ``A``, ``Aᴴ`` stay an exact
  adjoint pair and ``AᴴA = Nᴴ W N`` (what the Toeplitz kernel embeds). Measured data must be
  weighted the same way, ``sqrt(w) · k`` (:meth:`NUFFTOp.weight`), before being paired with ``A``
  (e.g. in ``data_consistency``). Gradients reach ``w`` and ``csm`` through autograd (``w > 0``
  where gradients are wanted: ``sqrt`` has an infinite slope at 0); none reaches the trajectory.
* ``gram`` uses Toeplitz embedding: ``Nᴴ W N`` is a 2-D Toeplitz convolution, applied with
  zero-padded FFTs on a ``2Y x 2X`` grid and a real kernel per ``(b, T)`` trajectory, computed on
  the first ``gram`` call and cached per dtype/device. It agrees with ``adjoint(forward(x))`` to
  ~1e-5 relative (two gridding approximations of the same exact operator).

Implementation: plain-PyTorch Kaiser-Bessel gridding (Beatty et al., IEEE TMI 2005: width
``J = numpoints``, ``β = π sqrt(J²/σ² (σ - 1/2)² - 0.8)`` for grid oversampling ``σ``,
closed-form deapodization), evaluated exactly (no lookup table) and differentiated by autograd.
torchkbnufft's interpolation is deliberately not used: its ``torch.jit.fork`` calls make torch
2.13 abort at interpreter exit ("terminate called without an active exception") in a sizeable
fraction of runs, and it misbehaves in DataLoader workers. Nothing is built at import time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from operators._validation import require_complex, require_tensor, shape_str
from operators.linear_operator import LinearOperator
from operators.sensitivity import SensitivityOp, check_csm

_PI_TOLERANCE = 1e-6  # relative slack on |ω| <= π for float rounding


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.complex128 else torch.float32


def _broadcast_batch(shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    try:
        return tuple(torch.broadcast_shapes(*shapes.values()))
    except RuntimeError:
        listing = ", ".join(f"{k} {shape_str(v)}" for k, v in shapes.items())
        raise ValueError(f"the batch dims must broadcast against each other; got {listing}") from None


class _Gridding:
    """Kaiser-Bessel gridding between an image ``(M, C, *im_size)`` and samples ``(M, C, K)``.

    ``forward`` computes ``Σ_n x_n exp(-i ω·(n - centre))`` (no normalisation) for each of the
    ``M`` trajectories ``omega (M, 2, K)``; ``adjoint`` is its exact adjoint.
    """

    def __init__(self, im_size: tuple[int, int], grid_size: tuple[int, int], numpoints: int,
                 centre: tuple[int, int]) -> None:
        self.im_size, self.grid_size, self.numpoints = im_size, grid_size, numpoints
        self.centre = centre
        ratios = [g / n for n, g in zip(im_size, grid_size)]  # oversampling σ per dimension
        self.betas = [math.pi * math.sqrt(max((numpoints / s) ** 2 * (s - 0.5) ** 2 - 0.8, 1e-3))
                      for s in ratios]

    def _deapodization(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``1 / (Φ_y(p_y) Φ_x(p_x))`` over image positions ``p = n - centre``, shape ``im_size``."""
        factors = []
        j = self.numpoints
        for n, g, c, beta in zip(self.im_size, self.grid_size, self.centre, self.betas):
            nu = (torch.arange(n, dtype=torch.float64, device=device) - c) / g
            arg = (beta**2 - (math.pi * j * nu) ** 2).to(torch.complex128).sqrt()
            # Fourier transform of the KB window (normalised to 1 at 0 offset); sinh -> sin past β.
            ft = (j * torch.sinh(arg) / arg).real / torch.special.i0(torch.tensor(beta, dtype=torch.float64))
            factors.append(1.0 / ft)
        return (factors[0][:, None] * factors[1][None, :]).to(dtype)

    def _weights(self, omega: torch.Tensor, cdtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per dimension: grid indices ``(M, K, J)`` and complex weights ``(M, K, J)``.

        The weights carry the phase ``exp(2πi m c / G)`` that places the image centre ``c`` at the
        grid origin (a circular shift, applied here instead of on the grid).
        """
        j = self.numpoints
        out = []
        for d, (g, c, beta) in enumerate(zip(self.grid_size, self.centre, self.betas)):
            u = omega[:, d, :] * (g / (2 * math.pi))
            m = torch.floor(u - j / 2).to(torch.long).unsqueeze(-1) + 1 + torch.arange(j, device=omega.device)
            t = u.unsqueeze(-1) - m
            arg = (1 - (2 * t / j) ** 2).clamp_min(0)
            phi = torch.special.i0(beta * arg.sqrt()) / torch.special.i0(torch.tensor(beta, dtype=u.dtype))
            idx = torch.remainder(m, g)
            angle = (2 * math.pi / g) * torch.remainder(m * c, g).to(u.dtype)
            out.append((idx, torch.polar(phi, angle).to(cdtype)))
        return out

    def interpolation(self, omega: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices into the grid flattened to ``(M·Gy·Gx, C)`` and the 2-D complex weights, both
        ``(J, M·K·J)``: one slab per y-neighbour, x-neighbours innermost."""
        (iy, wy), (ix, wx) = self._weights(omega, dtype)
        m, k, j = iy.shape
        gy, gx = self.grid_size
        base = (torch.arange(m, device=omega.device) * (gy * gx)).view(m, 1)
        iy, wy = iy.permute(2, 0, 1).unsqueeze(-1), wy.permute(2, 0, 1).unsqueeze(-1)  # (Jy, M, K, 1)
        idx = (iy * gx + base.unsqueeze(-1)) + ix  # (Jy, M, K, Jx)
        idx = idx.reshape(j, m * k * j)
        if m * gy * gx < 2**31:
            idx = idx.to(torch.int32)  # halves the cached index memory
        return idx, (wy * wx).reshape(j, m * k * j)

    def forward(self, x: torch.Tensor, interp: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Samples ``(M, C, K)`` of images ``x (M, C, Y, X)``; ``interp`` from :meth:`interpolation`."""
        m, c = x.shape[:2]
        gy, gx = self.grid_size
        idx, w = interp
        j = self.numpoints
        k = idx.shape[-1] // (m * j)
        x = x * self._deapodization(_real_dtype(x.dtype), x.device)
        grid = torch.fft.fft2(x, s=(gy, gx))  # image at the grid start; the weights recentre it
        rows = grid.permute(0, 2, 3, 1).reshape(m * gy * gx, c)  # coils innermost for row gathers
        out = None
        for jy in range(j):  # a slab at a time bounds the temporary to (M·K·J, C)
            vals = rows.index_select(0, idx[jy]).view(m * k, j, c)
            term = torch.bmm(w[jy].view(m * k, 1, j), vals)
            out = term if out is None else out + term
        return out.view(m, k, c).transpose(1, 2)

    def adjoint(self, y: torch.Tensor, interp: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Images ``(M, C, Y, X)`` of samples ``y (M, C, K)``; exact adjoint of :meth:`forward`."""
        m, c, k = y.shape
        (ny, nx), (gy, gx) = self.im_size, self.grid_size
        j = self.numpoints
        idx, w = interp
        samples = y.transpose(1, 2).reshape(m * k, 1, c)
        rows = y.new_zeros(m * gy * gx, c)
        for jy in range(j):
            contrib = w[jy].conj().view(m * k, j, 1) * samples
            rows.index_add_(0, idx[jy], contrib.view(m * k * j, c))
        grid = rows.view(m, gy, gx, c).permute(0, 3, 1, 2)
        x = torch.fft.ifft2(grid, norm="forward")[..., :ny, :nx]
        return x * self._deapodization(_real_dtype(y.dtype), y.device)


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


class _ToeplitzWithDensity(torch.autograd.Function):
    """Toeplitz gram ``Nᴴ W N z`` whose backward also yields the gradient for the density ``w``.

    The kernel is cached without a graph; the density gradient is obtained in the backward pass
    by differentiating a freshly computed kernel, so the cached kernel can serve any number of
    backward passes.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, density: torch.Tensor, op: NUFFTOp) -> torch.Tensor:
        ctx.op = op
        ctx.save_for_backward(z, density)
        return op._apply_toeplitz(z, op.toeplitz_kernel(z.dtype, z.device))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        z, density = ctx.saved_tensors
        op: NUFFTOp = ctx.op
        grad_z = grad_density = None
        if ctx.needs_input_grad[0]:
            # The real kernel makes the Toeplitz operator self-adjoint.
            grad_z = _ToeplitzWithDensity.apply(grad, density, op)
        if ctx.needs_input_grad[1]:
            with torch.enable_grad():
                leaf = density.detach().requires_grad_(True)
                kernel = op._compute_kernel(leaf, z.dtype, z.device)
                out = op._apply_toeplitz(z.detach(), kernel)
                (grad_density,) = torch.autograd.grad(out, leaf, grad)
        return grad_z, grad_density, None


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
        Grid oversampling of the gridding (>= 1; grid ``ceil(oversampling · N)``).
    numpoints
        Kaiser-Bessel interpolation neighbours per dimension.

    Notes
    -----
    forward: coil images ``x (*b, T, C, Y, X)`` complex -> ``(*b, T, C, K)``; adjoint the reverse.
    ``C`` is any number of images sharing the trajectory (coils; use ``C = 1`` for one image).
    Composed with :class:`~operators.sensitivity.SensitivityOp` it gives
    :class:`MultiCoilNUFFTOp`. The batch dims of ``trajectory`` and ``density`` must broadcast to
    those of ``x`` (a shared trajectory serves a whole batch). Any complex dtype works; the
    trajectory and density are cast to the matching real dtype.
    """

    def __init__(self, trajectory: torch.Tensor, im_size: Sequence[int], density: torch.Tensor | None = None,
                 oversampling: float = 2.0, numpoints: int = 6) -> None:
        super().__init__()
        self.trajectory = check_trajectory(trajectory)
        im = tuple(int(n) for n in im_size)
        if len(im) != 2 or min(im) < 1:
            raise ValueError(f"im_size must be (Y, X) with positive sizes; got {tuple(im_size)}")
        if not float(oversampling) >= 1.0:
            raise ValueError(f"oversampling must be >= 1; got {oversampling}")
        if int(numpoints) < 1:
            raise ValueError(f"numpoints must be >= 1; got {numpoints}")
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
        centre = (im[0] // 2, im[1] // 2)
        self._gridding = _Gridding(self.im_size, self.grid_size, self.numpoints, centre)
        self._kernel_cache: dict[tuple, torch.Tensor] = {}
        self._interp_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

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

    def _omega(self, batch: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        traj = self.trajectory.detach().to(device=device, dtype=_real_dtype(dtype))
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

    def _sqrt_density(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        if self.density is None:
            return None
        return self.density.to(device=device, dtype=_real_dtype(dtype)).sqrt().unsqueeze(-2)

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
        x = self._check_image(x)
        batch, c = tuple(x.shape[:-4]), x.shape[-3]
        images = x.reshape(-1, c, *self.im_size)
        k = self._gridding.forward(images, self._interpolation(batch, x.dtype, x.device)) * self._scale
        k = k.reshape(*batch, self.n_times, c, self.n_samples)
        sqrt_w = self._sqrt_density(x.dtype, x.device)
        return k if sqrt_w is None else k * sqrt_w

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Nᴴ(sqrt(w) · y)``: k-space ``(*b, T, C, K)`` -> coil images ``(*b, T, C, Y, X)``."""
        y = self._check_data(y)
        batch, c = tuple(y.shape[:-3]), y.shape[-2]
        sqrt_w = self._sqrt_density(y.dtype, y.device)
        if sqrt_w is not None:
            y = y * sqrt_w
        data = y.reshape(-1, c, self.n_samples)
        x = self._gridding.adjoint(data, self._interpolation(batch, y.dtype, y.device)) * self._scale
        return x.reshape(*batch, self.n_times, c, *self.im_size)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``Nᴴ W N x`` by Toeplitz embedding: coil images ``(*b, T, C, Y, X)`` -> same shape."""
        x = self._check_image(x)
        if self.density is not None and self.density.requires_grad and torch.is_grad_enabled():
            return _ToeplitzWithDensity.apply(x, self.density, self)
        return self._apply_toeplitz(x, self.toeplitz_kernel(x.dtype, x.device))

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
        """Real Fourier-domain kernel of the circulant embedding of ``Nᴴ W N`` (differentiable in
        ``density``)."""
        ny, nx = self.im_size
        rdtype = _real_dtype(dtype)
        batch = self.batch_shape
        omega = self._omega(batch, dtype, device)  # (n, 2, K)
        if density is None:
            weights = torch.ones(omega.shape[0], 1, self.n_samples, dtype=dtype, device=device)
        else:
            w = density.to(device=device, dtype=rdtype).expand(*batch, self.n_times, self.n_samples)
            weights = w.reshape(-1, 1, self.n_samples).to(dtype)
        # Toeplitz entries g(d) = (YX)^-1 Σ_k w_k exp(i ω_k·d), |d| < (Y, X). Centred gridding
        # reaches offsets d = p + s (p = n - centre) by modulating the data with exp(i ω·s); two
        # shifts give the half plane d_y >= 0 (d_x >= 0 and d_x < 0), one adjoint with 2 channels.
        (cy, cx) = self._gridding.centre
        shifts = torch.tensor([[cy, cx], [cy, cx - nx]], dtype=rdtype, device=device)  # (2, 2)
        angle = torch.einsum("sd,mdk->msk", shifts, omega)
        phase = torch.polar(torch.ones_like(angle), angle)
        interp = self._gridding.interpolation(omega, dtype)  # not cached: needed once
        g = self._gridding.adjoint(weights * phase, interp) / (ny * nx)  # (n, 2, Y, X)
        # Rows d_y in [0, Y): columns d_x = 0..X-1, then d_x = -X (outside the support) ..-1.
        g_neg = torch.cat([g.new_zeros(omega.shape[0], ny, 1), g[:, 1, :, 1:]], dim=-1)
        upper = torch.cat([g[:, 0], g_neg], dim=-1)  # (n, Y, 2X)
        n = omega.shape[0]
        # Rows d_y < 0 by Hermitian symmetry g(-d) = conj(g(d)).
        col_neg = (-torch.arange(2 * nx, device=device)) % (2 * nx)
        lower = upper[:, 1:, :][:, :, col_neg].conj().flip(-2)  # d_y = -(Y-1)..-1
        circ = torch.cat([upper, upper.new_zeros(n, 1, 2 * nx), lower], dim=-2)  # (n, 2Y, 2X)
        # The embedding is Hermitian, so its spectrum is real up to interpolation round-off.
        kernel = torch.fft.fft2(circ).real
        return kernel.reshape(*batch, self.n_times, 2 * ny, 2 * nx)

    def _apply_toeplitz(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ny, nx = self.im_size
        kernel = kernel.to(device=x.device, dtype=_real_dtype(x.dtype)).unsqueeze(-3)
        z = torch.fft.fft2(x, s=(2 * ny, 2 * nx))  # zero-padded at the end: the circulant embedding
        z = z * kernel if kernel.requires_grad else z.mul_(kernel)
        return torch.fft.ifft2(z)[..., :ny, :nx]

    def extra_repr(self) -> str:
        return (f"im_size={self.im_size}, n_times={self.n_times}, n_samples={self.n_samples}, "
                f"batch_shape={self.batch_shape}, density={self.density is not None}")


class MultiCoilNUFFTOp(LinearOperator):
    """Multi-coil non-Cartesian encoding ``A = W^{1/2} N S``.

    Parameters
    ----------
    csm
        Complex coil maps ``(*b, C, Y, X)``; gradients reach them through autograd.
    trajectory
        ``(*b, T, 2, K)`` (or ``(T, 2, K)`` shared), radians/pixel in ``[-π, π)``, rows
        ``(k_y, k_x)``; a different trajectory per contrast is allowed.
    density
        Optional density weights ``(*b, T, K)`` (or ``(T, K)``); see :class:`NUFFTOp`.
    oversampling, numpoints
        Gridding settings, see :class:`NUFFTOp`.

    Notes
    -----
    forward: ``x (*b, T, Y, X)`` -> ``(*b, T, C, K)``; adjoint: ``(*b, T, C, K)`` ->
    ``(*b, T, Y, X)``; ``gram``: ``Sᴴ (Nᴴ W N) S x`` with the Toeplitz-embedded ``Nᴴ W N``.
    The image must have the dtype of ``csm``; measured data are weighted with :meth:`weight`.
    """

    def __init__(self, csm: torch.Tensor, trajectory: torch.Tensor, density: torch.Tensor | None = None,
                 oversampling: float = 2.0, numpoints: int = 6) -> None:
        super().__init__()
        csm = check_csm(csm)
        self.sensitivity = SensitivityOp(csm)
        self.nufft = NUFFTOp(trajectory, tuple(csm.shape[-2:]), density=density,
                             oversampling=oversampling, numpoints=numpoints)
        self.batch_shape = _broadcast_batch({"csm": tuple(csm.shape[:-3]),
                                             "trajectory/density": self.nufft.batch_shape})

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
        return self.nufft(self.sensitivity(self._check_image(x)))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Multi-coil k-space ``(*b, T, C, K)`` -> coil-combined image series ``(*b, T, Y, X)``."""
        return self.sensitivity.adjoint(self.nufft.adjoint(y))

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``AᴴA x`` via Toeplitz embedding, ``(*b, T, Y, X)`` -> same shape."""
        return self.sensitivity.adjoint(self.nufft.gram(self.sensitivity(self._check_image(x))))

    def extra_repr(self) -> str:
        return f"n_coils={self.csm.shape[-3]}, batch_shape={self.batch_shape}"
