"""ESPIRiT coil sensitivity maps (Uecker et al., MRM 71:990-1001, 2014), vectorised in torch.

Used by :func:`operators.estimate_coil_maps` with ``method="espirit"``; :func:`espirit_maps` is the
core, working on an already cropped, fully sampled calibration region.

Method
------
1. Every ``k x k`` patch of the calibration region (all coils, all contrasts: they share the
   maps) is a vector ``y_p`` of length ``C k²``. The signal subspace is spanned by the
   eigenvectors ``v_n`` of ``M = Σ_p y_p y_pᴴ`` whose singular values ``√λ_n`` exceed
   ``threshold · √λ_max`` (``M`` is the Gram matrix of the calibration matrix, so its
   eigen-decomposition is the SVD of the block-Hankel calibration matrix).
2. Projecting every patch of a full k-space onto that subspace and averaging the ``k²`` patches
   that cover each sample is a convolution; in image space it is, per pixel ``x``, the ``C x C``
   matrix ``G(x) = k⁻² Σ_n h_n(x) h_n(x)ᴴ`` with ``h_{n,c}(x) = Σ_r v_{n,c}(r) e^{+2πi r·x/N}``
   (``r`` the offset in the patch; the sign matches the centred inverse FFT of
   :mod:`operators.fft`). ``G`` has Fourier coefficients only at lags ``|Δ| ≤ k - 1``: they are
   computed on a ``(2k-1)²`` grid with small FFTs and brought to ``(Y, X)`` by one zero-padded
   FFT per coil pair, so the cost hardly grows with the image size.
3. The maps are, per pixel, the unit eigenvector of ``G(x)`` with the largest eigenvalue
   (``≈ 1`` where the data are consistent with the maps; ``torch.linalg.eigh``); pixels whose
   largest eigenvalue is at most ``crop`` are set to zero. The per-pixel phase is left to the
   caller (:func:`operators.estimate_coil_maps` references it to a virtual body coil).

The eigen-decomposition of the patch Gram matrix and the construction of ``G`` run in
``complex128`` (they are small); the per-pixel ``C x C`` eigen-decompositions run in the dtype of
the data (``(Y, X, C, C)`` matrices dominate the memory). Deterministic on CPU.
"""

from __future__ import annotations

import torch
from einops import rearrange

from operators._validation import shape_str


def _signal_kernels(calib: torch.Tensor, kernel_size: int, threshold: float) -> torch.Tensor:
    """Signal-subspace kernels ``(*b, N, C, k, k)`` of ``calib (*b, T, C, Yc, Xc)``; ``N = C k²``
    with the discarded directions set to zero (so the shape is the same in every sample)."""
    k = kernel_size
    patches = calib.unfold(-2, k, 1).unfold(-2, k, 1)  # (*b, T, C, Py, Px, k, k)
    patches = rearrange(patches, "... t c py px ky kx -> ... (t py px) (c ky kx)")
    gram = patches.mT @ patches.conj()  # M = Σ_p y_p y_pᴴ, (*b, Ck², Ck²)
    eigval, eigvec = torch.linalg.eigh(gram.to(torch.complex128))
    eigval = eigval.clamp_min(0)
    # σ_n > threshold σ_max  <=>  λ_n > threshold² λ_max
    keep = eigval > threshold**2 * eigval[..., -1:]
    kernels = (eigvec * keep.unsqueeze(-2)).mT  # rows are the kept v_n, zeros elsewhere
    return rearrange(kernels, "... n (c ky kx) -> ... n c ky kx", c=calib.shape[-3], ky=k)


def _image_space_operator(kernels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Per-pixel ESPIRiT matrices ``G (*b, Y, X, C, C)`` of kernels ``(*b, N, C, k, k)``."""
    k = kernels.shape[-1]
    lags = 2 * k - 1
    # h_n on a (2k-1)² frequency grid: Σ_r v(r) e^{+2πi r ω / L}
    h = torch.fft.ifftn(kernels, s=(lags, lags), dim=(-2, -1), norm="forward")  # (*b, N, C, L, L)
    g_coarse = torch.einsum("...ncyx,...ndyx->...cdyx", h, h.conj()) / k**2
    lag_coef = torch.fft.fftn(g_coarse, dim=(-2, -1), norm="forward")  # K(Δ) at Δ mod L
    offsets = torch.arange(lags)
    offsets = torch.where(offsets < k, offsets, offsets - lags)  # Δ in [-(k-1), k-1]
    ny, nx = shape
    # Place K(Δ) at Δ mod (Y, X); index_add accumulates lags that alias on small grids.
    full = lag_coef.new_zeros(*lag_coef.shape[:-2], ny, lags).index_add_(-2, offsets % ny, lag_coef)
    full = full.new_zeros(*full.shape[:-1], nx).index_add_(-1, offsets % nx, full)
    # G(j) = Σ_Δ K(Δ) e^{2πi Δ (j - N//2) / N}: inverse DFT, then a roll by N//2 (fftshift).
    g = torch.fft.fftshift(torch.fft.ifftn(full, dim=(-2, -1), norm="forward"), dim=(-2, -1))
    g = rearrange(g, "... c d y x -> ... y x c d")
    return 0.5 * (g + g.mH)


def espirit_maps(calib: torch.Tensor, shape: tuple[int, int], kernel_size: int = 6,
                 threshold: float = 0.02, crop: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """ESPIRiT maps from a fully sampled calibration region (method in the module docstring).

    Parameters
    ----------
    calib
        Complex k-space ``(*b, T, C, Yc, Xc)``: the fully sampled calibration region, centred
        as in :mod:`operators.fft` (it need not be square or symmetric). The ``T`` contrasts share
        the maps; their patches are pooled. ``Yc, Xc >= kernel_size``.
    shape
        Output image size ``(Y, X)`` in pixels.
    kernel_size
        Side ``k`` of the square k-space kernel, in k-space samples.
    threshold
        Singular values of the calibration matrix at most ``threshold`` times the largest one
        span the null space (dimensionless, in ``[0, 1)``).
    crop
        Pixels whose largest eigenvalue is at most ``crop`` get zero maps (``0`` keeps all).

    Returns
    -------
    maps
        Complex ``(*b, C, Y, X)`` of the dtype of ``calib``: unit-norm eigenvectors (arbitrary
        per-pixel phase) where kept, zero elsewhere.
    eigenvalue
        Real ``(*b, Y, X)``: the largest eigenvalue of ``G(x)`` per pixel (dimensionless).
    """
    if calib.ndim < 4 or min(calib.shape[-2:]) < kernel_size:
        raise ValueError(f"calib must have shape (*b, T, C, Yc, Xc) with Yc, Xc >= kernel_size = "
                         f"{kernel_size}; got {shape_str(calib.shape)}")
    kernels = _signal_kernels(calib, kernel_size, threshold)
    eigval, eigvec = torch.linalg.eigh(_image_space_operator(kernels, shape).to(calib.dtype))
    top = eigval[..., -1]  # (*b, Y, X)
    maps = rearrange(eigvec[..., :, -1], "... y x c -> ... c y x") * (top > crop).unsqueeze(-3)
    return maps, top
