"""The pure grey-matter signal of a volume, from the geometry of its partial volumes.

In a real voxel the tissue *signals* add: a pixel of CSF, GM and WM fractions ``f`` (``Σ f = 1``)
has the signal vector (one entry per contrast) ``s = f_c m_c + f_g m_g + f_w m_w``. The brain's
pixels therefore fill a triangle, in the plane through the three pure-tissue signals ``m_k``, with
those signals at its corners. CSF and WM have pure pixels (ventricles, deep white matter), so their
corners are the medians over them. Grey matter has almost none at ≈ 1 mm: the cortical ribbon is
2–3 mm thick, lined with sulcal CSF, and in the MNI152 template every pixel with more than 95 % GM
still holds ≥ 0.1 % CSF (median 2 %). A T2w image shows CSF 10–70 times brighter than GM, so
the median over "pure" GM reads its T2w signal high (1–9 % on the 14 protocols of
``benchmarks.w2q``, most at the longest TE), and the fit then its T2 and T1.

:func:`grey_matter_signal` finds the GM corner instead. The triangle's two edges at that corner are
the mixtures without CSF (GM/WM, the inner border of the cortex) and without WM (GM/CSF, its
outer border); both are lined with pixels. In the plane, with WM at the origin and CSF at ``(L, 0)``
on the first axis, a pixel at ``(x, y)`` (``y > 0``) holds no CSF on the line from WM through the
corner ``(g_x, g_y)`` and no WM on the line from CSF through it, so
``g_x / g_y = min x / y`` and ``(g_x − L) / g_y = max (x − L) / y`` over the pixels: two
supporting lines whose intersection is the corner (a low and a high quantile instead of min and
max, so that noise and stray pixels do not set it).

Few cortical pixels are entirely free of CSF, so the no-CSF edge is lined with pixels a little
inside it: by their CSF fraction times the CSF signal. Where CSF is dark (T1w, FLAIR) that is
negligible; where it is tens to hundreds of times brighter than the tissues (T2w at long echo
times) it moves the corner's signal by several % (MNI152, textbook signals: T2w +4 % at
TE 0.25 s, +18 % at 0.40 s). :func:`pinqi.w2q.calibration.calibrate_tissues` therefore places the
corner in the contrasts where CSF is dark (``available``;
:data:`pinqi.w2q.calibration.CORNER_CSF_RATIO`), and finds grey matter's signal in a T2w of a
clinical echo time with :func:`grey_matter_unmixed` (each pixel's CSF removed) instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["grey_matter_signal", "grey_matter_unmixed"]


def _grey_pixels(images: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, min_weight: float, border: int,
                 smooth: int) -> torch.Tensor:
    """``(N, T)`` float64 signals of the pixels GM weighs more than ``min_weight`` in, at least
    ``border`` pixels inside ``mask``, after a ``smooth`` × ``smooth`` box average."""
    if smooth < 1 or smooth % 2 == 0 or smooth // 2 > border:
        raise ValueError(f"smooth must be odd, >= 1 and at most 2 border + 1 = {2 * border + 1}; got {smooth}")
    inner = mask.to(torch.bool)[:, None].to(torch.float64)
    if border > 0:  # erosion: the pixel and its neighbours within `border` lie inside the mask
        inner = -F.max_pool2d(-F.pad(inner, (border,) * 4), 2 * border + 1, stride=1)
    chosen = (inner[:, 0] > 0.5) & (weights[:, 1] > min_weight)
    images = images.detach().to(torch.float64)
    if smooth > 1:  # the windows of the chosen pixels lie inside the mask (border >= smooth // 2)
        images = F.avg_pool2d(F.pad(images, (smooth // 2,) * 4), smooth, stride=1)
    return images.transpose(0, 1)[:, chosen].T


def grey_matter_signal(
    images: torch.Tensor,
    weights: torch.Tensor,
    mask: torch.Tensor,
    csf: torch.Tensor,
    wm: torch.Tensor,
    available: torch.Tensor | None = None,
    quantile: float = 0.01,
    min_weight: float = 0.5,
    border: int = 2,
    min_pixels: int = 5000,
    smooth: int = 3,
) -> torch.Tensor | None:
    """The pure grey-matter signal of one volume as the GM corner of its partial-volume triangle.

    Parameters
    ----------
    images
        ``(S, T, Y, X)`` magnitude images of the ``S`` slices (one scale per contrast).
    weights
        ``(S, 3, Y, X)`` tissue weights of CSF, GM, WM (:func:`pinqi.w2q.segmentation.segment_tissues`):
        they only choose the pixels (GM weight above ``min_weight``).
    mask
        ``(S, Y, X)`` bool brain mask; pixels within ``border`` pixels of its edge are left out (they
        hold background, which pulls the signal towards zero, out of the triangle).
    csf, wm
        ``(T,)`` the pure CSF and WM signals (e.g. medians over their pure pixels).
    available
        ``(T,)`` bool, default all True: the corner is found in the available contrasts (at least 2).
    quantile
        Share of the GM pixels allowed beyond each supporting line.
    min_weight, border, min_pixels
        Pixel selection; fewer than ``min_pixels`` usable GM pixels give None. The edges are 1 %
        quantiles, so 5000 pixels put 50 beyond each: a volume of several slices at ≤ 2 mm (four
        1 mm MNI152 slices: ≈ 38 000 GM pixels; four at 1.8 mm: ≈ 11 500), not a single coarse
        slice (≈ 3000 at 1.8 mm, where the corner of single slices with random tissue values
        raised the test-set T1 MAPE of ``benchmarks.w2q`` from 8.2 to 9.1 %).
    smooth
        Side of the in-plane box the images are averaged over first (odd, at most ``2 border + 1``;
        1: none). An average of mixtures is a mixture of the same tissues, so the triangle stays
        while the noise drops ``smooth``-fold; unaveraged, the noise scatters pixels beyond the
        edges and moves the corner outwards (MNI152 at 1 mm, textbook signals: FLAIR +5.5 % at 2 %
        noise, +18 % at 5 %; averaged over 3 × 3: +1.0 % and +3.9 %).

    Returns
    -------
    ``(T,)`` float64 GM signal (zero in unavailable contrasts), or None when the corner cannot be
    placed: fewer than two available contrasts or ``min_pixels`` pixels, CSF and WM signals that
    coincide, or edges that do not meet at a positive signal.
    """
    if images.ndim != 4 or weights.shape != (images.shape[0], 3, *images.shape[2:]) \
            or mask.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images must be (S, T, Y, X), weights (S, 3, Y, X) and mask (S, Y, X) on one grid; got "
                         f"{tuple(images.shape)}, {tuple(weights.shape)} and {tuple(mask.shape)}")
    t = images.shape[1]
    if csf.shape != (t,) or wm.shape != (t,):
        raise ValueError(f"csf and wm must be (T,) = ({t},); got {tuple(csf.shape)} and {tuple(wm.shape)}")
    if not 0 <= quantile < 0.5:
        raise ValueError(f"quantile must be in [0, 0.5); got {quantile}")
    available = torch.ones(t, dtype=torch.bool) if available is None else available.to(torch.bool).reshape(-1).cpu()
    if available.shape != (t,):
        raise ValueError(f"available must be (T,) = ({t},); got {tuple(available.shape)}")
    use = torch.nonzero(available).flatten()
    if len(use) < 2:
        return None
    s = _grey_pixels(images[:, use], weights, mask, min_weight, border, smooth)
    if s.shape[0] < min_pixels:
        return None
    m_c, m_w = csf.to(s)[use], wm.to(s)[use]
    length = float((m_c - m_w).norm())
    if not length > 0:
        return None
    e1 = (m_c - m_w) / length
    d = s - m_w
    x = d @ e1
    # the plane's second axis: the main direction of the pixels across the WM-CSF line
    e2 = torch.linalg.svd(d - x[:, None] * e1, full_matrices=False)[2][0]
    y = d @ e2
    if float(y.median()) < 0:
        e2, y = -e2, -y
    far = y > 0.3 * torch.quantile(y, 0.9)  # away from the WM-CSF edge, where x / y is unstable
    if int(far.sum()) < min_pixels:
        return None
    q = torch.tensor([quantile, 1 - quantile], dtype=torch.float64)
    s1 = torch.quantile(x[far] / y[far], q[0])
    s2 = torch.quantile((x[far] - length) / y[far], q[1])
    if not float(s1 - s2) > 0:
        return None
    g_y = length / (s1 - s2)
    corner = m_w + s1 * g_y * e1 + g_y * e2
    if not bool((corner > 0).all()):
        return None
    out = torch.zeros(t, dtype=torch.float64)
    out[use] = corner
    return out


def grey_matter_unmixed(
    images: torch.Tensor,
    weights: torch.Tensor,
    mask: torch.Tensor,
    tissues: torch.Tensor,
    known: torch.Tensor,
    available: torch.Tensor | None = None,
    min_weight: float = 0.5,
    border: int = 2,
    smooth: int = 3,
    min_pixels: int = 5000,
) -> torch.Tensor | None:
    """The pure GM signal in the contrasts where its corner was not placed, from unmixed GM pixels.

    With the three pure signals known in the contrasts ``known`` (at least 2), each GM pixel's
    fractions (CSF, GM, WM; ``Σ f = 1``) follow from those contrasts alone; in every other
    available contrast ``c`` the pixel then says ``m_gc = (s_c − f_csf m_csf,c − f_wm m_wm,c) / f_gm``,
    its CSF and WM removed. The median over the pixels (those of :func:`grey_matter_signal`,
    with an unmixed GM fraction above ``min_weight``) is the GM signal. So grey matter keeps a
    signal in a contrast where a corner would be biased by the CSF that nearly every cortical
    pixel holds: each pixel's CSF is removed instead. An error in a pixel's unmixed CSF fraction
    is multiplied by the CSF signal, so this too degrades where CSF is very bright
    (:data:`pinqi.w2q.calibration.UNMIX_CSF_RATIO`).

    Parameters
    ----------
    images, weights, mask
        As in :func:`grey_matter_signal`.
    tissues
        ``(3, T)`` the pure CSF, GM and WM signals; GM's is used in ``known`` only.
    known
        ``(T,)`` bool, the contrasts where all three are known (e.g. the corner's).
    available
        ``(T,)`` bool, default all True.
    min_weight, border, smooth, min_pixels
        Pixel selection as in :func:`grey_matter_signal`; fewer than ``min_pixels`` give None.

    Returns
    -------
    ``(T,)`` float64: GM's signal, that of ``tissues`` in ``known``, the unmixed one in the other
    available contrasts (zero in unavailable ones); None without two known contrasts, a singular
    unmixing or too few pixels.
    """
    t = images.shape[1]
    available = torch.ones(t, dtype=torch.bool) if available is None else available.to(torch.bool).reshape(-1).cpu()
    known = known.to(torch.bool).reshape(-1).cpu()
    if tissues.shape != (3, t) or known.shape != (t,) or available.shape != (t,):
        raise ValueError(f"tissues must be (3, T) = (3, {t}), known and available (T,); got {tuple(tissues.shape)}, "
                         f"{tuple(known.shape)} and {tuple(available.shape)}")
    known = known & available
    if int(known.sum()) < 2:
        return None
    m = tissues.detach().to(torch.float64).cpu()
    out = torch.zeros(t, dtype=torch.float64)
    out[known] = m[1, known]
    rest = available & ~known
    if not bool(rest.any()):
        return out
    s = _grey_pixels(images, weights, mask, min_weight, border, smooth).cpu()  # (N, T)
    kn = torch.nonzero(known).flatten()
    system = torch.cat([m[:, kn].T, torch.ones(1, 3, dtype=torch.float64)])  # (T_known + 1, 3)
    rhs = torch.cat([s[:, kn], torch.ones(s.shape[0], 1, dtype=torch.float64)], 1)  # (N, T_known + 1)
    if float(torch.linalg.svdvals(system)[-1]) < 1e-9 * float(system.abs().max()):
        return None
    f = torch.linalg.lstsq(system, rhs.T).solution.T  # (N, 3)
    keep = f[:, 1] > min_weight
    if int(keep.sum()) < min_pixels:
        return None
    f, s = f[keep], s[keep]
    for c in torch.nonzero(rest).flatten().tolist():
        value = ((s[:, c] - f[:, 0] * m[0, c] - f[:, 2] * m[2, c]) / f[:, 1]).median()
        if not float(value) > 0:
            return None
        out[c] = value
    return out
