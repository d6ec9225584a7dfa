"""Intensity normalisation and the closed-form, bounded global scale of W2Q.

A weighted image's global intensity scale (receiver gain, reconstruction scaling) is unknown and
differs per contrast. W2Q handles it in two explicit stages.

1. **Normalisation** (:func:`normalise_images`): ``ỹ_c = y_c / m_c`` with ``m_c`` the 95th
   percentile of ``y_c`` inside the brain mask (robust to a few hot pixels). ``ỹ`` is O(1)
   whatever the scanner's scaling; it is what the networks see and what the fit explains.
2. **Scale** (:func:`fit_scale`): the signal model explains ``ỹ_c ≈ s_c · q_c(PD, T1, T2)``; for
   given maps ``p`` the least-squares scale inside the brain has the closed form
   ``s_c = Σ ỹ_c q_c(p) / Σ q_c(p)²``, which is then clamped to ``[(1 − δ) r_c, (1 + δ) r_c]``
   (``δ`` = 0.2, i.e. ±20 %) around a reference ``r_c``.

Reference (:func:`white_matter_reference`)
    PD and the scale are interchangeable (only ``s_c · PD`` is observed), so some tissue has to
    fix the PD unit. We use white matter: ``W`` = the 25 % of brain pixels whose current
    (T1, T2) are closest to canonical white matter (:data:`WM_REFERENCE`, distance in log T1 and
    log T2), and ``r_c = median_W ỹ_c / q_c(PD_W, T1, T2)`` with the current T1, T2 of each
    pixel of ``W`` (the protocol enters through ``q_c``) and ``PD_W`` the median current PD over
    ``W`` clamped to the white-matter range :data:`WM_PD_RANGE`. The reference is computed from
    the network's first estimate and held fixed (no gradient) through the iterations; the ±20 %
    band therefore keeps the fit near the network's white-matter calibration, and the PD unit
    can drift at most to white-matter PD within ``[0.5 · 0.8, 0.9 · 1.2]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "WM_REFERENCE",
    "WM_PD_RANGE",
    "normalise_images",
    "fit_scale",
    "white_matter_reference",
]

#: Canonical white matter at 3 T (PD, T1 [s], T2 [s]), the middle of the simulated WM ranges.
WM_REFERENCE: tuple[float, float, float] = (0.7, 1.15, 0.08)
#: Plausible white-matter PD (relative to water); the reference's PD is clamped to it.
WM_PD_RANGE: tuple[float, float] = (0.5, 0.9)


def _as_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``(B, Y, X)`` or ``(B, 1, Y, X)`` mask -> ``(B, 1, Y, X)`` in the images' dtype."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor (B, Y, X); got {type(mask).__name__}")
    b, _, ny, nx = images.shape
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (ny, nx):
        raise ValueError(f"mask must have shape (B, Y, X) = {(b, ny, nx)} of the images; got {tuple(mask.shape)}")
    return mask.to(images.dtype)


def _check_images(name: str, images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"{name} must be a real floating tensor (B, T, Y, X); got {got}")
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (B, T, Y, X); got {tuple(images.shape)}")


def normalise_images(
    images: torch.Tensor, mask: torch.Tensor, percentile: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide each image by its ``percentile`` inside the mask.

    Parameters
    ----------
    images
        ``(B, T, Y, X)`` real, non-negative magnitude images (any global scale).
    mask
        ``(B, Y, X)`` bool or 0/1 brain mask (an empty mask falls back to the whole image).
    percentile
        Quantile in (0, 1].

    Returns
    -------
    normalised : ``(B, T, Y, X)``
    factors : ``(B, T)`` the divisors ``m_c`` (1 where an image is zero in the mask, e.g. a
        missing contrast filled with zeros).
    """
    _check_images("images", images)
    if not 0 < percentile <= 1:
        raise ValueError(f"percentile must be in (0, 1]; got {percentile}")
    m = _as_mask(mask, images) > 0
    empty = ~m.flatten(1).any(1)
    m = m | empty.view(-1, 1, 1, 1)
    values = torch.where(m, images, torch.nan).detach().flatten(2)  # (B, T, N)
    factors = torch.nanquantile(values, percentile, dim=-1)
    factors = torch.where(factors > 0, factors, torch.ones_like(factors))
    return images / factors[..., None, None], factors


def fit_scale(
    synthesised: torch.Tensor,
    images: torch.Tensor,
    mask: torch.Tensor,
    reference: torch.Tensor | None = None,
    rel_bound: float = 0.2,
) -> torch.Tensor:
    """Closed-form least-squares scale per image, optionally bounded around a reference.

    ``s_c = argmin_s Σ_mask (s · q_c − ỹ_c)² = Σ_mask q_c ỹ_c / Σ_mask q_c²``, then clamped to
    ``[(1 − rel_bound) r_c, (1 + rel_bound) r_c]``. Differentiable in ``synthesised`` and
    ``images`` (zero gradient where the clamp is active).

    Parameters
    ----------
    synthesised
        ``(B, T, Y, X)`` model signals ``q_c(p)``.
    images
        ``(B, T, Y, X)`` (normalised) images ``ỹ_c``.
    mask
        ``(B, Y, X)`` bool or 0/1 (or real weights) of the pixels that count.
    reference
        ``(B, T)`` positive reference scales ``r_c``, or None for the unbounded fit.
    rel_bound
        ``δ`` in [0, 1).

    Returns
    -------
    ``(B, T)`` scales (1 where a synthesised image is zero in the mask and no reference is given).
    """
    _check_images("synthesised", synthesised)
    _check_images("images", images)
    if synthesised.shape != images.shape:
        raise ValueError(
            f"synthesised and images must have the same shape (B, T, Y, X); got "
            f"{tuple(synthesised.shape)} and {tuple(images.shape)}"
        )
    if not 0 <= rel_bound < 1:
        raise ValueError(f"rel_bound must be in [0, 1); got {rel_bound}")
    w = _as_mask(mask, images)
    numerator = (w * synthesised * images).sum(dim=(-2, -1))
    denominator = (w * synthesised.square()).sum(dim=(-2, -1))
    tiny = torch.finfo(images.dtype).tiny
    degenerate = denominator <= tiny
    scale = numerator / denominator.clamp_min(tiny)
    if reference is None:
        return torch.where(degenerate, torch.ones_like(scale), scale)
    if reference.shape != scale.shape:
        raise ValueError(f"reference must have shape (B, T) = {tuple(scale.shape)}; got {tuple(reference.shape)}")
    if not bool((reference.detach() > 0).all()):
        raise ValueError("reference scales must be positive")
    reference = reference.to(scale.dtype)
    scale = torch.where(degenerate, reference, scale)
    return torch.minimum(torch.maximum(scale, (1 - rel_bound) * reference), (1 + rel_bound) * reference)


def white_matter_reference(
    images: torch.Tensor,
    p: torch.Tensor,
    mask: torch.Tensor,
    signal: Callable[[torch.Tensor], torch.Tensor],
    fraction: float = 0.25,
    wm: tuple[float, float, float] = WM_REFERENCE,
    pd_range: tuple[float, float] = WM_PD_RANGE,
) -> torch.Tensor:
    """Reference scales ``r_c`` from white-matter-like pixels (module docstring); no gradient.

    Parameters
    ----------
    images
        ``(B, T, Y, X)`` normalised images ``ỹ``.
    p
        ``(B, 3, Y, X)`` current maps (PD, T1 [s], T2 [s]).
    mask
        ``(B, Y, X)`` brain mask.
    signal
        ``q``: ``(B, 3, Y, X) -> (B, T, Y, X)``, the per-contrast signal models of the protocol.
    fraction
        Share of the brain pixels taken as white-matter-like.
    wm
        Canonical white matter (PD, T1, T2).
    pd_range
        The white-matter PD range the reference PD is clamped to.

    Returns
    -------
    ``(B, T)`` positive scales (1 where a sample has no usable pixel or a zero signal).
    """
    _check_images("images", images)
    if p.ndim != 4 or p.shape[1] != 3 or p.shape[0] != images.shape[0] or p.shape[2:] != images.shape[2:]:
        raise ValueError(f"p must have shape (B, 3, Y, X) matching the images {tuple(images.shape)}; got {tuple(p.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    with torch.no_grad():
        m = _as_mask(mask, images)[:, 0] > 0
        t1, t2 = p[:, 1].clamp_min(1e-6), p[:, 2].clamp_min(1e-6)
        dist = (t1.log() - math.log(wm[1])).abs() + (t2.log() - math.log(wm[2])).abs()
        batch = images.shape[0]
        selected = torch.zeros_like(m)
        pd_w = torch.full((batch,), wm[0], dtype=p.dtype, device=p.device)
        for b in range(batch):
            d = dist[b][m[b]]
            if d.numel() == 0:
                continue
            k = max(1, int(round(fraction * d.numel())))
            rows, cols = torch.nonzero(m[b], as_tuple=True)
            nearest = torch.topk(d, k, largest=False).indices
            selected[b, rows[nearest], cols[nearest]] = True
            pd_w[b] = p[b, 0][selected[b]].median().clamp(*pd_range)
        pw = torch.stack([pd_w[:, None, None].expand_as(t1), t1, t2], 1)
        q = signal(pw)  # (B, T, Y, X)
        refs = torch.ones(images.shape[:2], dtype=images.dtype, device=images.device)
        for b in range(batch):
            if not bool(selected[b].any()):
                continue
            ratio = images[b][:, selected[b]] / q[b][:, selected[b]].clamp_min(1e-8)
            r = ratio.median(dim=-1).values
            refs[b] = torch.where(torch.isfinite(r) & (r > 0), r, torch.ones_like(r))
        return refs


def _monomials(shape: tuple[int, int], degree: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n, Y, X)`` monomials ``x^a y^b`` (a + b <= degree) on [-1, 1]²."""
    y = torch.linspace(-1, 1, shape[0], dtype=dtype, device=device)[:, None]
    x = torch.linspace(-1, 1, shape[1], dtype=dtype, device=device)[None, :]
    return torch.stack([(x**a * y**b).expand(shape) for a in range(degree + 1) for b in range(degree + 1 - a)])


def fit_smooth_field(
    synthesised: torch.Tensor,
    images: torch.Tensor,
    mask: torch.Tensor,
    degree: int,
    limits: tuple[float, float] = (0.6, 1.6),
) -> torch.Tensor:
    """Closed-form smooth relative intensity field per image (receive-bias correction).

    Least squares ``f_c = argmin Σ_mask (f_c · q_c − ỹ_c)²`` over polynomials of total degree
    ``degree`` in (x, y), normalised to mean 1 over the mask (the global level stays with
    :func:`fit_scale`) and clamped to ``limits``. ``synthesised`` should already include the
    global scale. Differentiable (``torch.linalg.solve``).

    Returns ``(B, T, Y, X)``; all ones for ``degree = 0``.
    """
    _check_images("synthesised", synthesised)
    if degree == 0:
        return torch.ones_like(synthesised)
    w = _as_mask(mask, images)
    basis = _monomials(tuple(images.shape[-2:]), degree, images.dtype, images.device)  # (n, Y, X)
    a = w[:, :, None] * synthesised[:, :, None] * basis  # (B, T, n, Y, X)
    gram = torch.einsum("btiyx,btjyx->btij", a, a)
    rhs = torch.einsum("btiyx,btyx->bti", a, images)
    n = basis.shape[0]
    ridge = 1e-6 * gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[..., None, None]
    coef = torch.linalg.solve(gram + ridge * torch.eye(n, dtype=images.dtype, device=images.device), rhs)
    field = torch.einsum("bti,iyx->btyx", coef, basis)
    mean = (field * w).sum((-2, -1)) / w.sum((-2, -1)).clamp_min(1)
    field = field / torch.where(mean > 0, mean, torch.ones_like(mean))[..., None, None]
    return field.clamp(*limits)
