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


def pinqi_loss(
    output: PINQIOutput,
    target: torch.Tensor,
    brain_mask: torch.Tensor,
    outside_weight: float = 0.1,
    deep_supervision: float = 0.05,
) -> torch.Tensor:
    """Masked MSE of the final parameters plus ``deep_supervision`` × that of every earlier iterate.

    The parameters are (Re M0, Im M0, R1), as the paper trains them (R1, not T1).
    """
    loss = masked_mse(output.final, target, brain_mask, outside_weight)
    for earlier in output.parameters[:-1]:
        loss = loss + deep_supervision * masked_mse(earlier, target, brain_mask, outside_weight)
    return loss
