"""Training losses of PINQI."""

from __future__ import annotations

import torch

from .model import PINQIOutput


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, brain_mask: torch.Tensor, outside_weight: float
) -> torch.Tensor:
    """Mean squared error over parameter channels, weighted to the brain.

    Parameters
    ----------
    prediction, target
        ``(B, P, Y, X)`` real parameter maps.
    brain_mask
        ``(B, Y, X)`` bool; pixels outside get ``outside_weight``.

    Returns
    -------
    Scalar: Σ_pixels w·Σ_P (p̂ − p)² / Σ_pixels w, averaged over the batch.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    weight = brain_mask.to(prediction.dtype) * (1.0 - outside_weight) + outside_weight
    squared = (prediction - target).square().sum(dim=1)
    return ((weight * squared).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1))).mean()


def in_scale_units(p: torch.Tensor, scale: torch.Tensor | None, amplitude: tuple[int, ...] = (0, 1)) -> torch.Tensor:
    """Parameters ``(B, P, Y, X)`` with the amplitude channels divided by the data scale ``(B,)``.

    The loss then does not depend on the arbitrary intensity unit of the k-space; ``scale=None``
    returns ``p`` unchanged.
    """
    if scale is None:
        return p
    factor = torch.ones(p.shape[:2], dtype=p.dtype, device=p.device)
    factor[:, list(amplitude)] = 1.0 / scale.to(p.dtype).view(-1, 1)
    return p * factor[..., None, None]


def pinqi_loss(
    output: PINQIOutput,
    target: torch.Tensor,
    brain_mask: torch.Tensor,
    outside_weight: float = 0.1,
    deep_supervision: float = 0.05,
) -> torch.Tensor:
    """Masked MSE of the final parameters plus ``deep_supervision`` × that of every earlier iterate.

    The parameters are (Re M0, Im M0, R1), as the paper trains them (R1, not T1); M0 is compared
    in units of the data scale ``output.scale`` (see :func:`in_scale_units`).
    """
    target = in_scale_units(target, output.scale)
    loss = masked_mse(in_scale_units(output.final, output.scale), target, brain_mask, outside_weight)
    for earlier in output.parameters[:-1]:
        loss = loss + deep_supervision * masked_mse(
            in_scale_units(earlier, output.scale), target, brain_mask, outside_weight
        )
    return loss
