"""Tissue segmentation of W2Q's maps for the intensity calibration (:mod:`pinqi.w2q.calibration`).

A mixed voxel's relaxation rates are near the water-weighted mean of its tissues' rates, so each
pixel's ``(1/T1, 1/T2)`` is unmixed into weights of CSF, grey and white matter
(:func:`unmix_tissues`); :func:`segment_tissues` keeps the pixels that are pure with their whole
neighbourhood. The classes' rate points follow the maps' own tissue levels, within the ranges of
:data:`simulation.tissues.W2Q_TISSUE_PRIOR`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from simulation.tissues import PARAMETERS, W2Q_TISSUE_PRIOR, TissueRange, _ranges_tensor

__all__ = ["CALIBRATION_CLASSES", "EXTRAPOLATION", "log_prior", "unmix_tissues", "segment_tissues"]

#: The tissue classes, in this order.
CALIBRATION_CLASSES: tuple[str, ...] = ("csf", "gm", "wm")
#: Weights at or above this are not a tissue but something beyond its rate point: fat or a
#: blood-product (T1 ≈ 0.3–0.4 s) left inside a loose brain mask unmixes to a white-matter weight of
#: about 5, where white matter itself stays below 1.7.
EXTRAPOLATION: float = 2.0


def log_prior(names: Sequence[str], prior: dict[str, TissueRange], dtype: torch.dtype,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(K, 3)`` means and standard deviations of ln (PD, T1, T2) matching uniform ranges."""
    ranges = _ranges_tensor(list(names), prior)[:, [PARAMETERS.index(p) for p in ("pd", "t1", "t2")]]  # (K, 3, 2)
    lo, hi = ranges.to(dtype=dtype, device=device).unbind(-1)
    if not bool((lo > 0).all() and (hi > lo).all()):
        raise ValueError("prior ranges must be positive intervals (low < high)")
    mean = (lo.log() + hi.log()) / 2
    std = (hi.log() - lo.log()) / (2 * math.sqrt(3.0))
    return mean, std


def _centre(z: torch.Tensor) -> torch.Tensor:
    """Where a class's pixels concentrate: ``(D, N) -> (D,)``, per row the median of its shortest half
    (the *shorth*, a robust mode). Unlike the median it is not dragged by a one-sided tail, such as
    the grey-matter/CSF partial volumes among the pixels that count as grey matter, which would
    otherwise walk the grey-matter point towards CSF and leave no pixel pure white matter."""
    s = z.sort(-1).values
    n = s.shape[-1]
    h = n // 2
    start = (s[:, h:] - s[:, : n - h]).argmin(-1)  # the shortest window of h + 1 sorted values
    return torch.stack([s[d, int(i) : int(i) + h + 1].median() for d, i in enumerate(start)])


def unmix_tissues(p: torch.Tensor, mask: torch.Tensor, names: Sequence[str] = CALIBRATION_CLASSES,
                  prior: dict[str, TissueRange] = W2Q_TISSUE_PRIOR, purity: float = 0.9, min_pixels: int = 8,
                  iterations: int = 5, shared: bool = False) -> torch.Tensor:
    """Per-pixel tissue weights of three classes from the relaxation rates of the maps.

    A mixed voxel's relaxation rates are near the water-weighted mean of its tissues' rates, so
    each pixel's ``z = (1/T1, 1/T2)`` is unmixed into weights ``w`` (``Σ w = 1``) of the classes'
    rate points ``E_k``: ``[E; 1] w = [z; 1]``, a 3×3 solve. The points start at the prior centres
    and move, ``iterations`` times, to the robust mode (:func:`_centre`) of ``z`` over the pixels with ``w_k > purity`` (where
    at least ``min_pixels`` are; else of those where ``w_k`` is the largest weight and above 0.5;
    never those with ``w_k`` ≥ :data:`EXTRAPOLATION`),
    so they follow the maps' own tissue levels, but never leave the
    class's prior range (a slice without pure CSF would otherwise pull the CSF point into the
    partial-volume pixels, which then look pure). ``shared``: one set of points for all samples
    (slices of one volume).

    Parameters
    ----------
    p
        ``(B, 3, Y, X)`` maps (PD, T1 [s], T2 [s]).
    mask
        ``(B, Y, X)`` brain mask.

    Returns
    -------
    ``(B, K, Y, X)`` weights (not clipped: outside the triangle of the rate points some are < 0);
    zero outside the mask.
    """
    if p.ndim != 4 or p.shape[1] != 3:
        raise ValueError(f"p must have shape (B, 3, Y, X); got {tuple(p.shape)}")
    if mask.shape != (p.shape[0], *p.shape[2:]):
        raise ValueError(f"mask must have shape (B, Y, X) = {(p.shape[0], *p.shape[2:])}; got {tuple(mask.shape)}")
    if len(names) != 3:
        raise ValueError(f"unmixing in (1/T1, 1/T2) needs exactly 3 classes; got {list(names)}")
    mask = mask.to(torch.bool)
    mean, std = log_prior(names, prior, torch.float64, p.device)
    half = math.sqrt(3.0) * std[:, 1:].T  # (2, K): the prior ranges' half-widths in ln T1, ln T2
    lowest, highest = (-(mean[:, 1:].T + half)).exp(), (-(mean[:, 1:].T - half)).exp()  # rate bounds (2, K)
    rates = 1 / p[:, 1:].detach().to(torch.float64).clamp_min(1e-6)  # (B, 2, Y, X)
    groups = [torch.arange(p.shape[0])] if shared else [torch.tensor([b]) for b in range(p.shape[0])]
    weights = torch.zeros(p.shape[0], len(names), *p.shape[2:], dtype=torch.float64, device=p.device)
    for members in groups:
        inside = mask[members]
        z = rates[members].permute(1, 0, 2, 3)[:, inside]  # (2, N)
        points = (-mean[:, 1:]).exp().T.clone()  # (2, K)
        w = z.new_zeros(len(names), z.shape[1])
        for it in range(iterations + 1):
            system = torch.cat([points, torch.ones_like(points[:1])])  # (3, K)
            w = torch.linalg.solve(system, torch.cat([z, torch.ones_like(z[:1])]))
            if it == iterations:
                break
            for k in range(len(names)):
                near = w[k] < EXTRAPOLATION  # not something far beyond the point (fat)
                pure = (w[k] > purity) & near
                if int(pure.sum()) < min_pixels:  # a point far from its class: move towards where it dominates
                    pure = (w.argmax(0) == k) & (w[k] > 0.5) & near
                if int(pure.sum()) >= min_pixels:
                    points[:, k] = torch.minimum(torch.maximum(_centre(z[:, pure]), lowest[:, k]), highest[:, k])
        block = weights[members].permute(1, 0, 2, 3)
        block[:, inside] = w
        weights[members] = block.permute(1, 0, 2, 3)
    return weights.to(p.dtype)


def segment_tissues(maps: torch.Tensor, mask: torch.Tensor, purity: float = 0.9,
                    prior: dict[str, TissueRange] = W2Q_TISSUE_PRIOR) -> tuple[torch.Tensor, torch.Tensor]:
    """Tissue weights and pure pixels of the slices of one volume (step 1 of the module docstring).

    Parameters
    ----------
    maps
        ``(S, 3, Y, X)`` maps (PD, T1 [s], T2 [s]) of the ``S`` slices, e.g. W2Q's maps fitted to the native images.
    mask
        ``(S, Y, X)`` brain mask.
    purity
        A pixel is pure in class ``k`` when its weight and those of its 8 neighbours exceed this
        (and stay below :data:`EXTRAPOLATION`).

    Returns
    -------
    weights : ``(S, K, Y, X)`` :func:`unmix_tissues` weights (one set of tissue points for the volume).
    pure : ``(S, K, Y, X)`` bool.
    """
    weights = unmix_tissues(maps, mask, prior=prior, purity=purity, shared=True)
    above = ((weights > purity) & (weights < EXTRAPOLATION)).to(maps.dtype)
    pure = -F.max_pool2d(-F.pad(above, (1, 1, 1, 1)), 3, stride=1) > 0.5  # erosion; outside the image counts as impure
    return weights, pure & mask.to(torch.bool)[:, None]
