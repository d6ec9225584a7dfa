"""Losses of W2Q training (see :mod:`pinqi.w2q.training`).

supervised: ``Σ_i w_i · mean_brain |p̂_i − p_i|`` on (PD, T1 [s], T2 [s]) of the final maps, plus
``deep_supervision`` × the same on every earlier estimate. self-supervised: L1 between the
re-synthesised and the input (normalised) images of all three contrasts in the brain +
``tv_weight`` × total variation of (PD, ln T1, ln T2) + ``pd_floor_weight`` ×
``mean_brain relu(pd_floor − PD)``.
"""

from __future__ import annotations

import torch

from .config import W2QTrainConfig
from .model import W2Q, W2QOutput

__all__ = ["map_l1", "supervised_loss", "total_variation", "self_supervised_loss"]


def _brain_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``x`` (B, Y, X) over the mask (B, Y, X), averaged over the batch."""
    m = mask.to(x.dtype)
    return ((x * m).sum((-2, -1)) / m.sum((-2, -1)).clamp_min(1)).mean()


def map_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """``Σ_i w_i mean_brain |pred_i − target_i|`` for (PD, T1, T2) maps ``(B, 3, Y, X)``."""
    return sum(w * _brain_mean((pred[:, i] - target[:, i]).abs(), mask) for i, w in enumerate(weights))  # type: ignore[return-value]


def supervised_loss(output: W2QOutput, target: torch.Tensor, mask: torch.Tensor, config: W2QTrainConfig) -> torch.Tensor:
    """Weighted L1 on the final maps plus deep supervision of the earlier estimates (module docstring)."""
    loss = map_l1(output.final, target, mask, config.loss_weights)
    for earlier in output.intermediate:
        loss = loss + config.deep_supervision * map_l1(earlier, target, mask, config.loss_weights)
    return loss


def total_variation(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of (PD, ln T1, ln T2), mean over brain pixel pairs."""
    u = torch.cat([maps[:, :1], maps[:, 1:].log()], 1)
    m = mask.to(u.dtype)
    dy, my = (u[..., 1:, :] - u[..., :-1, :]).abs().sum(1), m[..., 1:, :] * m[..., :-1, :]
    dx, mx = (u[..., :, 1:] - u[..., :, :-1]).abs().sum(1), m[..., :, 1:] * m[..., :, :-1]
    return ((dy * my).sum() + (dx * mx).sum()) / (my.sum() + mx.sum()).clamp_min(1)


def self_supervised_loss(model: W2Q, output: W2QOutput, config: W2QTrainConfig) -> torch.Tensor:
    """Re-synthesis L1 over all contrasts + TV + soft PD lower bound (module docstring)."""
    mask = output.brain_mask
    synthesised, _ = model.synthesise(output)
    loss = _brain_mean((synthesised - output.normalised).abs().mean(1), mask)
    loss = loss + config.tv_weight * total_variation(output.final, mask)
    return loss + config.pd_floor_weight * _brain_mean(torch.relu(config.pd_floor - output.final[:, 0]), mask)
