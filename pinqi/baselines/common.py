"""Helpers shared by the baselines: input checks, SENSE coil combination, per-sample magnitude
normalisation, parameter conversions, the brain-weighted map loss, padding, and the plain U-Net of
DeepT1's map stage.

Parameter layouts
-----------------
- complex layout ``(B, 3, Y, X)``: (Re M0, Im M0, R1 [1/s]), what the signal models take;
- magnitude layout ``(B, 2, Y, X)``: (|M0|, R1 [1/s]), what magnitude-only baselines predict;
- T1 [s] = 1 / R1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from operators import MultiCoilCartesianOp
from operators._validation import require_finite, require_nonzero

__all__ = [
    "check_kspace_inputs",
    "check_kspace_values",
    "coil_combine",
    "magnitude_scale",
    "reference_phase",
    "params_to_magnitude",
    "magnitude_to_params",
    "r1_to_t1",
    "t1_to_r1",
    "weighted_map_mse",
    "batch_item",
    "pad_to_multiple",
    "crop_padding",
    "MapUNet",
    "complex_to_channels",
    "channels_to_complex",
]


def check_kspace_inputs(
    kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor, n_times: int | None = None
) -> torch.Tensor:
    """Validate Cartesian inputs and return the mask broadcast to ``(B, T, Y, X)``.

    Parameters
    ----------
    kspace
        ``(B, T, C, Y, X)`` complex, zeros where not sampled.
    csm
        ``(B, C, Y, X)`` complex coil maps.
    mask
        Sampling mask broadcastable to ``(B, T, Y, X)`` (bool or real 0/1).
    n_times
        Expected T, if the caller was built for a fixed number of acquisitions.

    Returns
    -------
    The mask expanded (a view, not a copy) to ``(B, T, Y, X)``.

    Raises
    ------
    TypeError, ValueError
        Wrong types or shapes; NaN/inf values, all-zero coil maps or k-space of a sample, or a
        mask that samples nothing for a (sample, acquisition) (:func:`check_kspace_values`).
    """
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex():
        raise TypeError(f"kspace must be a complex tensor (B, T, C, Y, X); got {_describe(kspace)}")
    if kspace.ndim != 5:
        raise ValueError(f"kspace must have shape (B, T, C, Y, X); got {tuple(kspace.shape)}")
    b, t, c, y, x = kspace.shape
    if not isinstance(csm, torch.Tensor) or not csm.is_complex():
        raise TypeError(f"csm must be a complex tensor (B, C, Y, X); got {_describe(csm)}")
    if tuple(csm.shape) != (b, c, y, x):
        raise ValueError(
            f"csm must have shape (B, C, Y, X) = {(b, c, y, x)} to match kspace {tuple(kspace.shape)}; "
            f"got {tuple(csm.shape)}"
        )
    if not isinstance(mask, torch.Tensor) or mask.is_complex():
        raise TypeError(f"mask must be a bool or real tensor broadcastable to (B, T, Y, X); got {_describe(mask)}")
    try:
        expanded = torch.broadcast_to(mask, (b, t, y, x))
    except RuntimeError:
        raise ValueError(
            f"mask must be broadcastable to (B, T, Y, X) = {(b, t, y, x)}; got {tuple(mask.shape)}"
        ) from None
    if n_times is not None and t != n_times:
        raise ValueError(f"kspace has T = {t} acquisitions but the model was built for n_times = {n_times}")
    check_kspace_values(kspace, csm, expanded)
    return expanded


def check_kspace_values(kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor) -> None:
    """Refuse NaN/inf in ``kspace``, ``csm`` or ``mask``, coil maps that are all zero for a sample,
    a mask that samples nothing for some (sample, acquisition), and all-zero k-space of a sample.

    The messages name these arguments as the caller passed them (``kspace``, ``csm``, ``mask``).
    ``mask`` must already be expanded to ``(B, T, Y, X)``.
    """
    for name, value in (("kspace", kspace), ("csm", csm), ("mask", mask)):
        require_finite(name, value)
    require_nonzero("csm", csm, 3, "coil maps with no sensitivity make every image zero")
    require_nonzero("mask", mask, 2, "(sample, acquisition) with no sampled k-space location")
    require_nonzero("kspace", kspace, 4, "there is no signal to reconstruct")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return type(value).__name__


def coil_combine(kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SENSE coil combination of zero-filled k-space: the adjoint of the multi-coil operator.

    Parameters
    ----------
    kspace
        ``(B, T, C, Y, X)`` complex.
    csm
        ``(B, C, Y, X)`` complex coil maps.
    mask
        Optional sampling mask broadcastable to ``(B, T, Y, X)``; default all sampled (k-space is
        zero where not sampled anyway, so the mask changes nothing but the operator it builds).

    Returns
    -------
    ``(B, T, Y, X)`` complex: ``Σ_c conj(csm_c) · IFFT(kspace_c)``.
    """
    if mask is None:
        mask = torch.ones(1, dtype=torch.bool, device=kspace.device).expand(
            kspace.shape[0], kspace.shape[1], *kspace.shape[-2:]
        )
    mask = check_kspace_inputs(kspace, csm, mask)
    return MultiCoilCartesianOp(csm, mask).adjoint(kspace)


def magnitude_scale(images: torch.Tensor, quantile: float = 0.99) -> torch.Tensor:
    """Per-sample normalisation constant: the ``quantile`` of ``|images|`` over (T, Y, X).

    A high quantile rather than the maximum keeps single hot pixels (noise, aliasing) from setting
    the scale. Where the quantile is zero (a sparse object), the maximum is used; 1 where a sample
    is all zero. The result is detached (a constant of the data, not of the network). It is what
    makes every baseline scale-equivariant: ``magnitude_scale(a·x) = |a|·magnitude_scale(x)``, and
    the baselines divide their input by it and multiply M0 back, so ``f(a·k) = (a·M0, R1)``.

    Parameters
    ----------
    images
        ``(B, ...)`` real or complex.

    Returns
    -------
    ``(B,)`` real, positive.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must lie in (0, 1]; got {quantile}")
    flat = images.detach().abs().reshape(images.shape[0], -1)
    k = max(1, math.ceil(quantile * flat.shape[1]))
    scale = torch.kthvalue(flat, k, dim=1).values
    peak = flat.amax(dim=1)
    scale = torch.where(scale > 0, scale, peak)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def reference_phase(images: torch.Tensor) -> torch.Tensor:
    """Phase of the frame with the most energy (for saturation recovery: the longest time).

    Parameters
    ----------
    images
        ``(B, T, Y, X)`` complex.

    Returns
    -------
    ``(B, Y, X)`` real, radians, detached.
    """
    images = images.detach()
    frame = images.abs().square().sum(dim=(-2, -1)).argmax(dim=1)
    chosen = images[torch.arange(images.shape[0], device=images.device), frame]
    return chosen.angle()


def params_to_magnitude(params: torch.Tensor) -> torch.Tensor:
    """(Re M0, Im M0, R1) ``(B, 3, Y, X)`` -> (|M0|, R1) ``(B, 2, Y, X)``."""
    if params.ndim < 3 or params.shape[-3] != 3:
        raise ValueError(f"params must have shape (B, 3, Y, X) = (Re M0, Im M0, R1); got {tuple(params.shape)}")
    m0_abs = torch.complex(params[..., 0, :, :], params[..., 1, :, :]).abs()
    return torch.stack((m0_abs, params[..., 2, :, :]), dim=-3)


def magnitude_to_params(
    m0_abs: torch.Tensor, r1: torch.Tensor, phase: torch.Tensor | None = None
) -> torch.Tensor:
    """(|M0|, R1) (each ``(B, Y, X)``) and an optional phase -> (Re M0, Im M0, R1) ``(B, 3, Y, X)``.

    Without a phase, M0 is taken real and non-negative (Im M0 = 0).
    """
    if m0_abs.shape != r1.shape:
        raise ValueError(f"m0_abs and r1 must have the same shape; got {tuple(m0_abs.shape)} and {tuple(r1.shape)}")
    if phase is None:
        return torch.stack((m0_abs, torch.zeros_like(m0_abs), r1), dim=-3)
    if phase.shape != m0_abs.shape:
        raise ValueError(f"phase must have the shape of m0_abs {tuple(m0_abs.shape)}; got {tuple(phase.shape)}")
    return torch.stack((m0_abs * torch.cos(phase), m0_abs * torch.sin(phase), r1), dim=-3)


def r1_to_t1(r1: torch.Tensor, min_r1: float = 1e-3) -> torch.Tensor:
    """T1 [s] = 1 / R1, with R1 clamped to at least ``min_r1`` [1/s] (T1 ≤ 1000 s by default)."""
    return 1.0 / r1.clamp(min=min_r1)


def t1_to_r1(t1: torch.Tensor, min_t1: float = 1e-3) -> torch.Tensor:
    """R1 [1/s] = 1 / T1, with T1 clamped to at least ``min_t1`` [s]."""
    return 1.0 / t1.clamp(min=min_t1)


def weighted_map_mse(
    prediction: torch.Tensor, target: torch.Tensor, brain_mask: torch.Tensor | None, outside_weight: float = 0.1
) -> torch.Tensor:
    """Brain-weighted mean squared error of parameter maps.

    Pixels inside ``brain_mask`` weigh 1, those outside ``outside_weight``; the loss is
    ``Σ_pixels w · Σ_P (p̂ − p)² / Σ_pixels w`` per sample, averaged over the batch (the same
    definition as PINQI's training loss, so the numbers compare).

    Parameters
    ----------
    prediction, target
        ``(B, P, Y, X)`` real.
    brain_mask
        ``(B, Y, X)`` bool or 0/1, or None for uniform weights.
    outside_weight
        Weight of pixels outside the brain, in [0, 1].
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    if not 0.0 <= outside_weight <= 1.0:
        raise ValueError(f"outside_weight must lie in [0, 1]; got {outside_weight}")
    squared = (prediction - target).square().sum(dim=1)
    if brain_mask is None:
        return squared.mean()
    if brain_mask.shape != squared.shape:
        raise ValueError(
            f"brain_mask must have shape (B, Y, X) = {tuple(squared.shape)}; got {tuple(brain_mask.shape)}"
        )
    weight = brain_mask.to(squared.dtype) * (1.0 - outside_weight) + outside_weight
    total = weight.sum(dim=(-2, -1)).clamp(min=torch.finfo(squared.dtype).tiny)
    return ((weight * squared).sum(dim=(-2, -1)) / total).mean()


def batch_item(batch: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    """``batch[key]`` with an error naming the keys a baseline batch needs."""
    if key not in batch:
        raise KeyError(
            f"batch has no {key!r}; a baseline batch holds 'kspace' (B,T,C,Y,X), 'csm' (B,C,Y,X), "
            f"'mask' (B,T,Y,X), 'params' (B,3,Y,X), optionally 'brain_mask' (B,Y,X) and 'images' (B,T,Y,X); "
            f"got keys {sorted(batch)}"
        )
    return batch[key]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two dimensions symmetrically up to a multiple of ``multiple``.

    Returns
    -------
    The padded tensor and the padding (left, right, top, bottom) for :func:`crop_padding`.
    """
    height, width = x.shape[-2:]
    pad_y = (-height) % multiple
    pad_x = (-width) % multiple
    padding = (pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2)
    if pad_y == 0 and pad_x == 0:
        return x, padding
    return F.pad(x, padding), padding


def crop_padding(x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on the last two dimensions."""
    left, right, top, bottom = padding
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class MapUNet(nn.Module):
    """Plain U-Net (Ronneberger et al. 2015) as used by DeepT1's map stage.

    Per level two 3x3 convolutions with bias and ReLU (no normalisation); 2x2 max pooling down;
    2x2 stride-2 transposed convolutions up, concatenated with the skip; a final 1x1 convolution.
    Inputs whose size is not a multiple of ``2**len(features)`` are zero-padded and cropped back.

    Parameters
    ----------
    in_channels, out_channels
        Channels of input and output.
    features
        Widths of the encoder levels; one max pooling follows each, so ``len(features)`` poolings.
    bottleneck
        Width at the lowest resolution; defaults to ``features[-1]`` (no growth at the bottom,
        which is the configuration whose size matches the paper's 20.5 M at T = 8).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (64, 128, 256, 512),
        bottleneck: int | None = None,
    ) -> None:
        super().__init__()
        if len(features) < 1 or any(f < 1 for f in features):
            raise ValueError(f"features must be a non-empty sequence of positive widths; got {tuple(features)}")
        bottleneck = features[-1] if bottleneck is None else bottleneck
        widths = [in_channels, *features]
        self.encoders = nn.ModuleList(_DoubleConv(widths[i], widths[i + 1]) for i in range(len(features)))
        self.bottleneck = _DoubleConv(features[-1], bottleneck)
        ups, decoders = [], []
        below = bottleneck
        for width in reversed(features):
            ups.append(nn.ConvTranspose2d(below, width, 2, stride=2))
            decoders.append(_DoubleConv(2 * width, width))
            below = width
        self.ups = nn.ModuleList(ups)
        self.decoders = nn.ModuleList(decoders)
        self.head = nn.Conv2d(features[0], out_channels, 1)
        self.depth = len(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, Y, X)`` -> ``(B, out_channels, Y, X)``."""
        x, padding = pad_to_multiple(x, 2**self.depth)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(torch.cat((skips.pop(), up(x)), dim=1))
        return crop_padding(self.head(x), padding)


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """``(N, T, Y, X)`` complex -> ``(T, N, 2, Y, X)`` real (time first, for recurrences)."""
    return rearrange(torch.view_as_real(x), "n t y x c -> t n c y x")


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_to_channels`: ``(T, N, 2, Y, X)`` real -> ``(N, T, Y, X)`` complex."""
    return torch.view_as_complex(rearrange(x, "t n c y x -> n t y x c").contiguous())
