"""Image-quality metrics of quantitative maps: nRMSE, MAE, PSNR and masked SSIM, one value per sample.

Shapes: ``pred`` and ``target`` are ``(Y, X)`` (one sample; a 0-d result) or ``(B, Y, X)``
(a ``(B,)`` result). ``mask`` (bool, or real with values 0/1) is ``None`` (every pixel), of the same
shape as ``pred``, or ``(Y, X)`` for every sample of a batch. The metrics are generic; the PINQI
results report them on T1 in seconds inside the brain mask.

Every metric indexes by the mask: pixels outside it (whatever they hold, NaN included) enter
neither the value nor its gradient. NaN or inf inside the mask, an empty mask, or mismatched shapes
raise ``ValueError``.

Computation runs in float64 (complex128 for complex input to ``nrmse``/``mae``) and the result is
returned in the real dtype of ``pred``; gradients flow to ``pred`` (and ``target``).

SSIM (Wang et al. 2004) uses 7x7 uniform windows placed at every position where the window fits
inside the image (no padding), sample (N-1 normalised) variances and covariance as
scikit-image's default, ``K1 = 0.01``, ``K2 = 0.03``; only windows whose whole support lies inside
the mask are averaged. ``data_range`` defaults to ``max - min`` of the target inside the mask, per
sample (treated as a constant for gradients).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["nrmse", "mae", "psnr", "ssim", "map_metrics"]


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, name: str, allow_complex: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Validate; return pred, target as (B, Y, X) float64/complex128, bool mask (B, Y, X), batched."""
    for label, value in (("pred", pred), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: {label} must be a tensor; got {type(value).__name__}")
        if value.is_complex() and not allow_complex:
            raise TypeError(f"{name}: {label} must be real; got {value.dtype}")
        if not (value.is_floating_point() or value.is_complex()):
            raise TypeError(f"{name}: {label} must be a floating-point tensor; got {value.dtype}")
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.ndim not in (2, 3):
        raise ValueError(f"{name}: pred must have shape (Y, X) or (B, Y, X); got {tuple(pred.shape)}")
    batched = pred.ndim == 3
    if not batched:
        pred, target = pred[None], target[None]
    if mask is None:
        mask = torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    else:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{name}: mask must be a tensor or None; got {type(mask).__name__}")
        if mask.shape == pred.shape[1:]:
            mask = mask.expand(pred.shape)
        elif not (batched and mask.shape == pred.shape):
            expected = f"{tuple(pred.shape[1:])}" + (f" or {tuple(pred.shape)}" if batched else "")
            raise ValueError(f"{name}: mask must have shape {expected}; got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"{name}: a non-boolean mask must contain only 0 and 1")
            mask = mask != 0
        mask = mask.to(pred.device)
    empty = (~mask.flatten(1).any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{name}: the mask is empty for sample(s) {empty}")
    _require_finite_inside(name, pred, target, mask)
    wide = torch.complex128 if (pred.is_complex() or target.is_complex()) else torch.float64
    zero = torch.zeros((), dtype=wide, device=pred.device)
    # index by the mask: values outside it (even NaN) never enter the arithmetic, nor its gradient
    return torch.where(mask, pred.to(wide), zero), torch.where(mask, target.to(wide), zero), mask, batched


def _require_finite_inside(name: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
    """Refuse NaN/inf inside the mask (a metric of a map with NaN would itself be NaN)."""
    for label, value in (("pred", pred), ("target", target)):
        bad = int((~torch.isfinite(value.detach()) & mask).sum())
        if bad:
            raise ValueError(f"{name}: {label} has {bad} NaN or inf value(s) inside the mask")


def _finish(value: torch.Tensor, pred: torch.Tensor, batched: bool) -> torch.Tensor:
    dtype = pred.real.dtype if pred.is_complex() else pred.dtype
    value = value.to(dtype)
    return value if batched else value[0]


def nrmse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised root mean squared error ``‖pred − target‖₂ / ‖target‖₂`` over the mask.

    Parameters
    ----------
    pred, target
        ``(Y, X)`` or ``(B, Y, X)``, real or complex (moduli are used).
    mask
        ``None``, or bool / 0-1 of shape ``(Y, X)`` or like ``pred``.

    Returns
    -------
    0-d tensor, or ``(B,)``: one value per sample (``inf``/``nan`` where the target is 0 on the mask).
    """
    p, t, m, batched = _prepare(pred, target, mask, "nrmse")
    error = (p - t).abs().square().sum(dim=(1, 2))
    norm = t.abs().square().sum(dim=(1, 2))
    return _finish((error / norm).sqrt(), pred, batched)


def mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error ``mean |pred − target|`` over the mask, per sample.

    Shapes as :func:`nrmse`; the result is in the unit of the maps (seconds for T1).
    """
    p, t, m, batched = _prepare(pred, target, mask, "mae")
    total = (p - t).abs().sum(dim=(1, 2))
    return _finish(total / m.sum(dim=(1, 2)), pred, batched)


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio ``20 log10(max |target| / RMSE)`` over the mask, in dB, per sample.

    The peak is the largest ``|target|`` inside the mask (treated as a constant for gradients).
    Shapes as :func:`nrmse`; ``inf`` where ``pred`` equals ``target`` on the mask.
    """
    p, t, m, batched = _prepare(pred, target, mask, "psnr")
    mse = (p - t).abs().square().sum(dim=(1, 2)) / m.sum(dim=(1, 2))
    peak = t.abs().detach().flatten(1).amax(1)
    return _finish(20 * torch.log10(peak) - 10 * torch.log10(mse), pred, batched)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    window: int = 7,
    data_range: float | torch.Tensor | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity averaged over the uniform windows that lie fully inside the mask.

    Parameters
    ----------
    pred, target
        Real ``(Y, X)`` or ``(B, Y, X)``.
    mask
        ``None``, or bool / 0-1 of shape ``(Y, X)`` or like ``pred``.
    window
        Side of the square uniform window (odd or even, at most ``min(Y, X)``).
    data_range
        Dynamic range ``L`` in ``C1 = (K1 L)², C2 = (K2 L)²``: a float or ``(B,)`` tensor; ``None``:
        ``max − min`` of ``target`` inside the mask, per sample.
    k1, k2
        SSIM constants.

    Returns
    -------
    0-d tensor, or ``(B,)``.

    Raises
    ------
    ValueError
        If a sample's mask contains no complete window, or its data range is not positive.
    """
    p, t, m, batched = _prepare(pred, target, mask, "ssim", allow_complex=False)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 < window <= min(p.shape[-2:]):
        raise ValueError(f"ssim: window must be an int in [2, {min(p.shape[-2:])}]; got {window!r}")
    batch = p.shape[0]
    if data_range is None:
        inf = torch.tensor(torch.inf, dtype=t.dtype, device=t.device)
        high = torch.where(m, t, -inf).flatten(1).amax(1)
        low = torch.where(m, t, inf).flatten(1).amin(1)
        data_range = (high - low).detach()
    else:
        data_range = torch.as_tensor(data_range, dtype=t.dtype, device=t.device)
        if data_range.ndim == 0:
            data_range = data_range.expand(batch)
        if data_range.shape != (batch,):
            raise ValueError(
                f"ssim: data_range must be a float or have shape ({batch},); got {tuple(data_range.shape)}"
            )
    bad = (~(data_range > 0)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"ssim: data_range must be positive; it is not for sample(s) {bad} (constant target?)")

    # A window is valid when it contains no pixel outside the mask.
    outside = F.max_pool2d((~m).to(p.dtype)[:, None], window, stride=1)[:, 0]
    valid = outside == 0
    none_valid = (~valid.flatten(1).any(1)).nonzero().flatten().tolist()
    if none_valid:
        raise ValueError(f"ssim: no {window}x{window} window lies fully inside the mask for sample(s) {none_valid}")

    stack = torch.stack((p, t, p * p, t * t, p * t), 1)
    mean_p, mean_t, mean_pp, mean_tt, mean_pt = F.avg_pool2d(stack, window, stride=1).unbind(1)
    n = window * window
    correction = n / (n - 1)
    var_p = (mean_pp - mean_p * mean_p) * correction
    var_t = (mean_tt - mean_t * mean_t) * correction
    cov = (mean_pt - mean_p * mean_t) * correction
    c1 = ((k1 * data_range) ** 2).view(-1, 1, 1)
    c2 = ((k2 * data_range) ** 2).view(-1, 1, 1)
    ssim_map = ((2 * mean_p * mean_t + c1) * (2 * cov + c2)) / (
        (mean_p * mean_p + mean_t * mean_t + c1) * (var_p + var_t + c2)
    )
    value = torch.where(valid, ssim_map, 0.0).sum(dim=(1, 2)) / valid.sum(dim=(1, 2))
    return _finish(value, pred, batched)


def map_metrics(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per parameter map, averaged over samples, in the mask: MAE, MPE (signed mean percentage
    error), MAPE (mean absolute percentage error), PSNR [dB] (peak = max target).

    Parameters
    ----------
    pred, target
        ``(B, P, Y, X)`` real maps (e.g. W2Q's PD, T1 [s], T2 [s]).
    mask
        ``(B, Y, X)``; samples with an empty mask are left out.
    names
        ``P`` names, the keys of the result (e.g. ``("pd", "t1", "t2")``).
    """
    if pred.shape != target.shape or pred.ndim != 4 or len(names) != pred.shape[1]:
        raise ValueError(f"map_metrics: pred and target must both have shape (B, P = {len(names)}, Y, X); "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    if tuple(mask.shape) != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(f"map_metrics: mask must have shape (B, Y, X) = {(pred.shape[0], *pred.shape[2:])}; "
                         f"got {tuple(mask.shape)}")
    m = mask.bool()
    if not bool(m.any()):
        raise ValueError("map_metrics: the mask is empty for every sample")
    inside = m[:, None].expand_as(pred)
    _require_finite_inside("map_metrics", pred, target, inside)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        rows = []
        for b in range(pred.shape[0]):
            p, t = pred[b, i][m[b]].double(), target[b, i][m[b]].double()
            if t.numel() == 0:
                continue
            rel = (p - t) / t.clamp_min(1e-6)
            rmse = (p - t).square().mean().sqrt().clamp_min(1e-12)
            rows.append([(p - t).abs().mean(), 100 * rel.mean(), 100 * rel.abs().mean(), 20 * torch.log10(t.max() / rmse)])
        v = torch.tensor(rows).mean(0).tolist() if rows else [math.nan] * 4
        out[name] = dict(zip(("mae", "mpe", "mape", "psnr"), v))
    return out
