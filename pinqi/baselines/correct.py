"""CoRRECT (Xu et al., 2023) adapted to saturation-recovery T1 mapping, as in the PINQI paper.

Two networks trained jointly:

1. unrolled image reconstruction (deep unfolding): from ``x₀ = Aᴴk`` (normalised),
   ``x ← x − γ_i (Aᴴ(A x − k) + τ_i R(x))`` for ``n_iterations`` steps, with ``R`` a plain CNN on
   the 2T real/imaginary channels shared by all steps, and learnable ``γ_i, τ_i > 0`` (softplus);
2. a parameter U-Net (:class:`~pinqi.baselines.common.MapUNet`) from the reconstructed images'
   2T channels to (Re M0, Im M0, R1); R1 through a softplus.

Loss (:func:`correct_loss`), weights 1 / 0.1 / 1 as in the PINQI paper's adaptation:
supervised image MSE against the noise-free images, self-supervised model consistency
``|q(p̂) − x̂|²`` between the estimated parameters and the reconstructed images, and the
supervised brain-weighted MSE of the parameters (which the PINQI paper added because labels
exist). The two image terms are in units of the per-sample normalisation (0.99 quantile of the
zero-filled magnitude), so their size does not depend on the data's scale; the outputs are scaled
back, so CoRRECT(a·k) = (a·images, a·M0, R1) for a > 0 from 1e-6 to 1e6 (tested). Non-finite or
all-zero inputs are refused.

Size at the defaults (T = 5): the CNN (7 layers of 64 filters) has 196,234 parameters and the
U-Net (widths 64-128-256-512-512, bottleneck 1024) 43,883,523; the paper reports 187,010 and
46,741,698 for its version (whose exact layer list it does not give).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from operators import MultiCoilCartesianOp

from ..common.bounded import inverse_softplus
from .common import (
    MapUNet,
    batch_item,
    check_kspace_inputs,
    magnitude_scale,
    weighted_map_mse,
)
from .dopamine import plain_cnn

__all__ = ["CoRRECT", "correct_loss", "correct_train_step"]

LOSS_WEIGHTS = (1.0, 0.1, 1.0)


def _to_channels(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return rearrange(torch.view_as_real(x), "b t y x r -> b (t r) y x").to(dtype)


def _to_complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(rearrange(x, "b (t r) y x -> b t y x r", r=2).contiguous())


class CoRRECT(nn.Module):
    """Unrolled CNN-regularised image reconstruction, then a parameter U-Net.

    Parameters
    ----------
    signal_model
        ``q(p)`` with p = (Re M0, Im M0, R1) (used by the self-supervised loss).
    n_iterations
        Unrolled gradient steps of the image reconstruction.
    hidden, n_layers
        Filters and layers of the regularising CNN.
    map_features, map_bottleneck
        Encoder widths and bottleneck width of the parameter U-Net (None: the last width).
    step_init, reg_init
        Initial ``γ`` and ``τ``.
    quantile
        Quantile of the zero-filled magnitude used for the normalisation.
    """

    def __init__(
        self,
        signal_model: nn.Module,
        n_iterations: int = 5,
        hidden: int = 64,
        n_layers: int = 7,
        map_features: Sequence[int] = (64, 128, 256, 512, 512),
        map_bottleneck: int | None = 1024,
        step_init: float = 1.0,
        reg_init: float = 1.0,
        quantile: float = 0.99,
    ) -> None:
        super().__init__()
        if n_iterations < 1:
            raise ValueError(f"n_iterations must be positive; got {n_iterations}")
        self.signal_model = signal_model
        self.n_times = int(signal_model.n_contrasts)
        self.quantile = quantile
        channels = 2 * self.n_times
        self.regulariser = plain_cnn(channels, channels, hidden, n_layers)
        self.raw_steps = nn.Parameter(torch.full((n_iterations,), inverse_softplus(step_init)))
        self.raw_regs = nn.Parameter(torch.full((n_iterations,), inverse_softplus(reg_init)))
        self.map_net = MapUNet(channels, 3, map_features, bottleneck=map_bottleneck)
        with torch.no_grad():
            self.map_net.head.bias.copy_(torch.tensor([0.0, 0.0, inverse_softplus(1.0)]))

    def forward(self, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruct images and parameters from undersampled multi-coil k-space.

        Parameters
        ----------
        kspace
            ``(B, T, C, Y, X)`` complex, zeros where not sampled.
        csm
            ``(B, C, Y, X)`` complex coil maps.
        mask
            Sampling mask broadcastable to ``(B, T, Y, X)``.

        Returns
        -------
        dict with ``"images"`` ``(B, T, Y, X)`` complex and ``"params"`` ``(B, 3, Y, X)``
        (Re M0, Im M0, R1), both in data units, and ``"scale"`` ``(B,)``.
        """
        check_kspace_inputs(kspace, csm, mask, self.n_times)
        operator = MultiCoilCartesianOp(csm, mask)
        zero_filled = operator.adjoint(kspace)
        scale = magnitude_scale(zero_filled, self.quantile)
        k = kspace / scale[:, None, None, None, None].to(kspace.dtype)
        x = zero_filled / scale[:, None, None, None].to(zero_filled.dtype)
        dtype = self.raw_steps.dtype
        steps, regs = F.softplus(self.raw_steps), F.softplus(self.raw_regs)
        for gamma, tau in zip(steps, regs):
            reg = _to_complex(self.regulariser(_to_channels(x, dtype))).to(x.dtype)
            x = x - gamma.to(x.real.dtype) * (operator.adjoint(operator(x) - k) + tau.to(x.real.dtype) * reg)
        raw = self.map_net(_to_channels(x, dtype))
        m0_scale = scale.to(dtype)[:, None, None]
        params = torch.stack((raw[:, 0] * m0_scale, raw[:, 1] * m0_scale, F.softplus(raw[:, 2])), dim=1)
        return {"images": x * scale[:, None, None, None].to(x.dtype), "params": params, "scale": scale}


def correct_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    signal_model: nn.Module,
    weights: tuple[float, float, float] = LOSS_WEIGHTS,
    outside_weight: float = 0.1,
) -> torch.Tensor:
    """``w₁ · image MSE + w₂ · |q(p̂) − x̂|² + w₃ · parameter MSE`` (see the module notes).

    ``batch`` holds ``"images"`` (noise-free, ``(B, T, Y, X)``), ``"params"`` and optionally
    ``"brain_mask"``.
    """
    images, params, scale = outputs["images"], outputs["params"], outputs["scale"]
    norm = scale.to(images.real.dtype)[:, None, None, None]
    target_images = batch_item(batch, "images").to(images.dtype)
    image_term = ((images - target_images) / norm).abs().square().mean()
    model_term = ((signal_model(params).to(images.dtype) - images) / norm).abs().square().mean()
    target = batch_item(batch, "params").to(params.dtype)
    param_term = weighted_map_mse(params, target, batch.get("brain_mask"), outside_weight)
    return weights[0] * image_term + weights[1] * model_term + weights[2] * param_term


def correct_train_step(
    model: CoRRECT,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, torch.Tensor],
    signal_model: nn.Module | None = None,
    outside_weight: float = 0.1,
    max_grad_norm: float | None = 1.0,
) -> torch.Tensor:
    """One optimisation step; returns the detached loss. Non-finite gradients raise ``FloatingPointError``."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    outputs = model(batch_item(batch, "kspace"), batch_item(batch, "csm"), batch_item(batch, "mask"))
    q = signal_model if signal_model is not None else model.signal_model
    loss = correct_loss(outputs, batch, q, outside_weight=outside_weight)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm, error_if_nonfinite=True)
    optimizer.step()
    return loss.detach()
