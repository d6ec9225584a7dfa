"""Coil sensitivity maps: simulation (birdcage-like ring) and estimation (Walsh, Inati).

Simulation model (:func:`simulate_coil_maps`)
---------------------------------------------
Positions are in FOV units, ``y = (n - Y//2) / Y`` and ``x = (n - X//2) / X`` (the FOV spans
``[-0.5, 0.5)``). ``C`` coils sit on a ring of radius ``0.5`` (the FOV edge) at angles
``φ₀ + 2π c / C``, with a global rotation ``φ₀ ~ U[0, 2π)`` and a small jitter of each coil
(angle ``± 0.1`` of the coil spacing, radius ``± 0.05``). Coil ``c`` has a Gaussian magnitude
``exp(-ln 2 · d² / h_c²)`` (``d`` the distance to the coil, so ``h_c`` is the half-width at half
maximum) with ``h_c ~ U[0.2, 0.5]``, and a smooth phase given by a random 2-D polynomial of degree
2, ``a₀ + a₁ y + a₂ x + a₃ y² + a₄ x y + a₅ x²`` with ``a_i ~ U[-π, π)``. The maps are then
normalised to ``Σ_c |c|² = 1`` at every pixel and set to zero outside ``object_mask``.

Estimation (:func:`estimate_coil_maps`)
---------------------------------------
Low-resolution coil images come from the fully sampled k-space centre (Hann-windowed along ``Y``)
or are given directly. ``"walsh"``: per pixel, the dominant eigenvector (power iteration) of the
coil covariance summed over contrasts and a ``kernel_size²`` box window (Walsh et al., MRM 2000).
``"inati"``: the iterative fast-optimal method (Inati et al., ISMRM 2014) that alternates a
coil-combined image and smoothed sensitivities, never forming covariance matrices.
``"espirit"``: ESPIRiT (Uecker et al., MRM 2014; :mod:`operators.espirit`) on the calibration
region = the fully sampled centre lines times as many readout samples around ``X // 2``
(a square region, as BART and SigPy use). In all three the phase is referenced to a virtual body
coil (the dominant eigenvector of the image-wide coil covariance of the low-resolution images).
Output maps have ``Σ_c |c|² = 1`` and are zero in the background: Walsh and Inati where the
smoothed signal amplitude is below ``threshold`` times its maximum, ESPIRiT where the largest
eigenvalue is at most ``crop``.

Calibration data: by default every contrast's centre lines are pooled (the lines sampled in
all contrasts). ``contrast="longest"`` with the acquisition ``times`` uses only the contrast with
the longest delay (per sample), as the PINQI paper does for saturation recovery, where it has
the most signal; an int picks one contrast index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from operators._validation import require_complex, require_real, shape_str
from operators.espirit import espirit_maps
from operators.fft import centered_fft, centered_ifft
from operators.sampling import as_generator

_RING_RADIUS = 0.5
_HALF_WIDTH_RANGE = (0.2, 0.5)


def _coordinates(shape: tuple[int, int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    ny, nx = shape
    y = (torch.arange(ny, dtype=dtype) - ny // 2) / ny
    x = (torch.arange(nx, dtype=dtype) - nx // 2) / nx
    return y, x


def simulate_coil_maps(n_coils: int, shape: Sequence[int], object_mask: torch.Tensor | None = None,
                       generator: torch.Generator | int | None = None, dtype: torch.dtype = torch.complex64,
                       batch_size: int | None = None, normalize: bool = True) -> torch.Tensor:
    """Random smooth birdcage-like coil sensitivity maps (model in the module docstring).

    Parameters
    ----------
    n_coils
        Number of coils ``C``.
    shape
        ``(Y, X)``.
    object_mask
        Optional bool ``(Y, X)`` (or ``(B, Y, X)`` with ``batch_size``): maps are normalised inside
        and zero outside. ``None``: normalised everywhere.
    generator
        ``torch.Generator``, int seed, or ``None`` (fresh random seed). Same seed, same maps.
    dtype
        ``torch.complex64`` or ``torch.complex128``.
    batch_size
        If given, return ``(B, C, Y, X)`` with fresh maps per sample.
    normalize
        ``False`` returns the raw maps (Gaussian magnitude times phase, no normalisation, no mask).

    Returns
    -------
    Complex maps ``(C, Y, X)`` or ``(B, C, Y, X)``.
    """
    if isinstance(n_coils, bool) or not isinstance(n_coils, int) or n_coils < 1:
        raise ValueError(f"n_coils must be a positive int; got {n_coils!r}")
    dims = tuple(shape)
    if len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"shape must be a (Y, X) pair of positive ints; got {shape!r}")
    if dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"dtype must be torch.complex64 or torch.complex128; got {dtype}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    ny, nx = dims
    batch = 1 if batch_size is None else batch_size
    if object_mask is not None:
        if not isinstance(object_mask, torch.Tensor) or object_mask.dtype != torch.bool:
            got = object_mask.dtype if isinstance(object_mask, torch.Tensor) else type(object_mask).__name__
            raise TypeError(f"object_mask must be a bool tensor; got {got}")
        allowed = [(ny, nx)] + ([] if batch_size is None else [(batch, ny, nx)])
        if tuple(object_mask.shape) not in allowed:
            raise ValueError(f"object_mask must have shape {' or '.join(map(str, allowed))}; "
                             f"got {shape_str(object_mask.shape)}")
    gen = as_generator(generator)
    rdtype = torch.float64 if dtype == torch.complex128 else torch.float32

    def uniform(lo: float, hi: float, *size: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*size, generator=gen, dtype=torch.float64)

    rotation = uniform(0, 2 * math.pi, batch, 1)
    spacing = 2 * math.pi / n_coils
    angle = rotation + spacing * torch.arange(n_coils) + uniform(-0.1, 0.1, batch, n_coils) * spacing
    radius = _RING_RADIUS + uniform(-0.05, 0.05, batch, n_coils)
    centre_y, centre_x = radius * torch.sin(angle), radius * torch.cos(angle)
    half_width = uniform(*_HALF_WIDTH_RANGE, batch, n_coils)
    coef = uniform(-math.pi, math.pi, batch, n_coils, 6)

    y, x = _coordinates((ny, nx), torch.float64)
    rate = (math.log(2) / half_width.square()).unsqueeze(-1)  # (B, C, 1)
    c = coef.unsqueeze(-1)
    # Gaussian magnitude and the phase terms without the x·y product are separable: build 1-D
    # complex profiles and take their outer product; only the x·y phase needs a full-size exp.
    mag_y = torch.exp(-rate * (y - centre_y.unsqueeze(-1)).square())  # (B, C, Y)
    mag_x = torch.exp(-rate * (x - centre_x.unsqueeze(-1)).square())  # (B, C, X)
    prof_y = torch.polar(mag_y, c[..., 0, :] + c[..., 1, :] * y + c[..., 3, :] * y.square()).to(dtype)
    prof_x = torch.polar(mag_x, c[..., 2, :] * x + c[..., 5, :] * x.square()).to(dtype)
    cross = coef[..., 4, None, None].to(rdtype) * (y[:, None] * x[None, :]).to(rdtype)  # (B, C, Y, X)
    maps = prof_y.unsqueeze(-1) * prof_x.unsqueeze(-2) * torch.polar(torch.ones_like(cross), cross)
    if normalize:
        # Σ_c |c|² = Σ_c |prof_y|² |prof_x|²: a (Y x C) @ (C x X) product per sample.
        energy = torch.einsum("bcy,bcx->byx", mag_y.square(), mag_x.square())
        scale = energy.rsqrt().to(rdtype)
        if object_mask is not None:
            scale = scale * (object_mask if object_mask.ndim == 3 else object_mask.unsqueeze(0))
        maps = maps * scale.unsqueeze(-3)
    return maps[0] if batch_size is None else maps


# ---------------------------------------------------------------------------- estimation
def _box_smooth(z: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Mean over a ``kernel_size²`` window (shrunk at the border) of complex ``(..., Y, X)``."""
    if kernel_size == 1:
        return z
    shape = z.shape
    real = torch.view_as_real(z).movedim(-1, -3).reshape(-1, shape[-2], shape[-1])
    smooth = F.avg_pool2d(real, kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)
    smooth = smooth.reshape(*shape[:-2], 2, shape[-2], shape[-1]).movedim(-3, -1).contiguous()
    return torch.view_as_complex(smooth)


def _calibration_lines(sampled: torch.Tensor, n_center: int | None) -> tuple[int, int]:
    """``[start, stop)`` of the fully sampled centre lines along ``Y``; ``sampled`` is a bool
    ``(*b, T, C or 1, Y, X)`` that marks the sampled k-space positions."""
    ny = sampled.shape[-2]
    if n_center is not None:
        if isinstance(n_center, bool) or not isinstance(n_center, int) or not 1 <= n_center <= ny:
            raise ValueError(f"n_center must be an int in [1, Y = {ny}]; got {n_center!r}")
        start = ny // 2 - n_center // 2
        return start, start + n_center
    # A line counts as sampled in every pattern if no (batch, contrast) has it all zero.
    lines = sampled.any(dim=-1).any(dim=-2).reshape(-1, ny).all(dim=0)
    if not bool(lines[ny // 2]):
        raise ValueError(
            f"the k-space centre line y = Y//2 = {ny // 2} is not sampled in every contrast; pass n_center "
            "or coil images (domain='image')"
        )
    start = stop = ny // 2
    while start > 0 and bool(lines[start - 1]):
        start -= 1
    while stop < ny and bool(lines[stop]):
        stop += 1
    return start, stop


def _low_resolution_images(kspace: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    n = stop - start
    window = torch.zeros(kspace.shape[-2], dtype=kspace.real.dtype, device=kspace.device)
    # Hann window over the calibration region (reduces ringing of the low-resolution images).
    window[start:stop] = torch.sin(math.pi * (torch.arange(n, dtype=window.dtype) + 0.5) / n).square()
    return centered_ifft(kspace * window.unsqueeze(-1))


def _select_contrast(data: torch.Tensor, mask: torch.Tensor | None, contrast: int | str | None,
                     times: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep one contrast (``T = 1``) of ``data (*b, T, C, Y, X)`` and of its ``mask``."""
    n_t = data.shape[-4]
    if times is not None and contrast != "longest":
        raise ValueError(f"times is only used with contrast='longest'; got contrast={contrast!r}")
    if contrast is None:
        return data, mask
    if contrast == "longest":
        if times is None:
            raise ValueError("contrast='longest' needs the acquisition times (T,) or (*b, T) in seconds")
        if not require_real("times", times).is_floating_point():
            raise TypeError(f"times must be a real floating tensor (seconds); got dtype {times.dtype}")
        if tuple(times.shape) not in ((n_t,), tuple(data.shape[:-3])):
            raise ValueError(f"times must have shape ({n_t},) or {shape_str(data.shape[:-3])} (T of the "
                             f"data); got {shape_str(times.shape)}")
        index = times.argmax(dim=-1).expand(data.shape[:-4])  # first maximum on ties
    elif isinstance(contrast, int) and not isinstance(contrast, bool) and -n_t <= contrast < n_t:
        index = torch.full(data.shape[:-4], contrast % n_t, dtype=torch.long)
    else:
        raise ValueError(f"contrast must be None, 'longest' or an int in [-T, T) = [{-n_t}, {n_t}); "
                         f"got {contrast!r}")

    def pick(t: torch.Tensor, axis: int) -> torch.Tensor:
        idx = index.to(t.device).reshape(*index.shape, *(1,) * (-axis))
        return t.gather(axis, idx.expand(*index.shape, 1, *t.shape[axis + 1:]))

    return pick(data, -4), None if mask is None else pick(mask.expand(*data.shape[:-3], *data.shape[-2:]), -3)


def _espirit_calibration(data: torch.Tensor, domain: str, start: int, stop: int) -> torch.Tensor:
    """Square calibration region ``(*b, T, C, n, min(n, X))`` of the lines ``[start, stop)``."""
    kspace = data if domain == "kspace" else centered_fft(data)
    width = min(stop - start, data.shape[-1])
    first = data.shape[-1] // 2 - width // 2
    return kspace[..., start:stop, first:first + width]


def _body_coil(images: torch.Tensor) -> torch.Tensor:
    """Dominant eigenvector ``(*b, C)`` of the image-wide coil covariance of ``(*b, T, C, Y, X)``."""
    flat = images.transpose(-4, -3).reshape(*images.shape[:-4], images.shape[-3], -1)  # (*b, C, T·Y·X)
    cov = flat @ flat.mH
    return torch.linalg.eigh(cov)[1][..., -1]


def _reference_phase(maps: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """Remove the per-pixel phase of ``maps (*b, C, Y, X)`` relative to the body coil ``(*b, C)``."""
    ref = torch.einsum("...c,...cyx->...yx", body.conj(), maps)
    return maps * torch.sgn(ref).conj().unsqueeze(-3)


def _walsh(images: torch.Tensor, kernel_size: int, n_iter: int, body: torch.Tensor) -> torch.Tensor:
    cov = torch.einsum("...tcyx,...tdyx->...cdyx", images, images.conj())
    cov = _box_smooth(cov, kernel_size)
    cov = cov.movedim(-4, -1).movedim(-4, -1)  # (*b, Y, X, C, C)
    v = body[..., None, None, :, None].expand(*cov.shape[:-1], 1)
    for _ in range(n_iter):
        v = cov @ v
        v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True).clamp_min(torch.finfo(v.real.dtype).tiny)
    return v.squeeze(-1).movedim(-1, -3)


def _inati(images: torch.Tensor, kernel_size: int, n_iter: int, body: torch.Tensor) -> torch.Tensor:
    maps = body[..., :, None, None].expand(*body.shape, *images.shape[-2:])
    for _ in range(n_iter):
        combined = torch.einsum("...cyx,...tcyx->...tyx", maps.conj(), images)
        maps = _box_smooth(torch.einsum("...tcyx,...tyx->...cyx", images, combined.conj()), kernel_size)
        norm = torch.linalg.vector_norm(maps, dim=-3, keepdim=True)
        maps = _reference_phase(maps / norm.clamp_min(torch.finfo(norm.dtype).tiny), body)
    return maps


def _check_data(data: torch.Tensor, domain: str, mask: torch.Tensor | None) -> None:
    if data.ndim < 4:
        raise ValueError(
            f"data must have shape (*b, T, C, Y, X) (at least 4 dims); got {shape_str(data.shape)}"
        )
    if not bool(torch.isfinite(data).all()):
        raise ValueError(f"data must be finite; got {int((~torch.isfinite(data)).sum())} NaN or inf values")
    empty = (data == 0).flatten(-4).all(-1)
    if bool(empty.any()):
        raise ValueError(f"data is all zero (in {int(empty.sum())} of {empty.numel()} samples): "
                         "there is nothing to estimate coil maps from")
    if mask is not None:
        if domain != "kspace":
            raise ValueError("mask is only used with domain='kspace'")
        mask = require_real("mask", mask)
        layout = (*data.shape[:-3], *data.shape[-2:])
        try:
            ok = mask.ndim >= 2 and torch.broadcast_shapes(mask.shape, layout) == layout
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"mask must broadcast to (*b, T, Y, X) = {shape_str(layout)} of the data; "
                             f"got {shape_str(mask.shape)}")


def _check_kernel_size(method: str, kernel_size: int | None) -> int:
    if kernel_size is None:
        return 6 if method == "espirit" else 5
    odd = method != "espirit"
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
            or odd and kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive {'odd ' if odd else ''}int; got {kernel_size!r}")
    return kernel_size


def estimate_coil_maps(data: torch.Tensor, method: str = "walsh", *, domain: str = "kspace",
                       n_center: int | None = None, kernel_size: int | None = None, n_iter: int | None = None,
                       threshold: float = 0.02, crop: float = 0.95, mask: torch.Tensor | None = None,
                       contrast: int | str | None = None, times: torch.Tensor | None = None) -> torch.Tensor:
    """Estimate normalised coil sensitivity maps from calibration data (methods in the module
    docstring).

    Parameters
    ----------
    data
        Complex ``(*b, T, C, Y, X)``: Cartesian k-space with a fully sampled centre along ``Y``
        (``domain="kspace"``) or coil images (``domain="image"``). The ``T`` contrasts share the
        maps and are pooled unless ``contrast`` picks one; add ``T = 1`` for a single set.
        Must be finite and not all zero in any sample.
    method
        ``"walsh"``, ``"inati"`` or ``"espirit"``.
    domain
        ``"kspace"`` or ``"image"``.
    n_center
        Number of fully sampled centre lines (around ``Y // 2``); default: detected (from
        ``mask`` if given, else from the non-zero data) as the largest run of lines around the
        centre that are sampled in every contrast used. ESPIRiT from images: the centre lines of
        the images' k-space that form its calibration region, default ``min(Y, 24)``.
    kernel_size
        Walsh, Inati: odd side of the box window over which coil covariances are pooled
        (default 5 pixels). ESPIRiT: side of the k-space kernel (default 6 samples); at most the
        number of centre lines and ``X``.
    n_iter
        Power iterations (Walsh, default 10) or fast-optimal iterations (Inati, default 5);
        not used by ESPIRiT.
    threshold
        Walsh, Inati: pixels whose smoothed signal amplitude is below ``threshold`` times its
        maximum get zero maps. ESPIRiT: singular values of the calibration matrix at most
        ``threshold`` times the largest span the null space.
    crop
        ESPIRiT only: pixels whose largest eigenvalue is at most ``crop`` get zero maps.
    mask
        Optional bool or real sampling mask broadcastable to ``(*b, T, Y, X)``, non-zero where
        sampled (``domain="kspace"`` only); it decides which lines are fully sampled.
    contrast
        ``None``: pool all contrasts. ``"longest"``: per sample, only the contrast with the
        largest ``times`` (the PINQI paper's choice: the longest saturation delay has the most
        signal). An int in ``[-T, T)``: that contrast.
    times
        Acquisition times ``(T,)`` or ``(*b, T)`` in seconds; needed by ``contrast="longest"``
        only.

    Returns
    -------
    Complex maps ``(*b, C, Y, X)`` with ``Σ_c |c|² = 1`` where there is signal, 0 elsewhere.
    """
    data = require_complex("data", data)
    if method not in ("walsh", "inati", "espirit"):
        raise ValueError(f"method must be 'walsh', 'inati' or 'espirit'; got {method!r}")
    if domain not in ("kspace", "image"):
        raise ValueError(f"domain must be 'kspace' or 'image'; got {domain!r}")
    _check_data(data, domain, mask)
    kernel_size = _check_kernel_size(method, kernel_size)
    if n_iter is None:
        n_iter = 10 if method == "walsh" else 5
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive int; got {n_iter!r}")
    if not 0 <= float(threshold) < 1:
        raise ValueError(f"threshold must be in [0, 1); got {threshold}")
    if not 0 <= float(crop) < 1:
        raise ValueError(f"crop must be in [0, 1); got {crop}")
    data, mask = _select_contrast(data, mask, contrast, times)
    if domain == "kspace":
        layout = (*data.shape[:-3], *data.shape[-2:])
        sampled = data != 0 if mask is None else (mask != 0).expand(layout).unsqueeze(-3)
        start, stop = _calibration_lines(sampled, n_center)
        images = _low_resolution_images(data, start, stop)
    else:
        images = data
        start, stop = _calibration_lines(data, min(data.shape[-2], 24) if n_center is None else n_center)
    body = _body_coil(images)
    if method == "espirit":
        n_lines = stop - start
        if n_lines < kernel_size or data.shape[-1] < kernel_size:
            raise ValueError(f"ESPIRiT needs at least kernel_size = {kernel_size} fully sampled centre lines "
                             f"and readout samples; got {n_lines} lines and X = {data.shape[-1]}")
        calib = _espirit_calibration(data, domain, start, stop)
        maps = espirit_maps(calib, tuple(data.shape[-2:]), kernel_size, float(threshold), float(crop))[0]
        return _reference_phase(maps, body)
    if method == "walsh":
        maps = _reference_phase(_walsh(images, kernel_size, n_iter, body), body)
    else:
        maps = _inati(images, kernel_size, n_iter, body)
    amplitude = _box_smooth(images.abs().square().sum(dim=(-4, -3)).to(images.dtype), kernel_size).real.sqrt()
    peak = amplitude.flatten(-2).amax(-1)[..., None, None]
    signal = amplitude > threshold * peak
    return maps * signal.unsqueeze(-3)
