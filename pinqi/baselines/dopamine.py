"""DOPAMINE (Jun et al., MRM 2021) adapted to saturation-recovery T1 mapping, as in the PINQI paper.

Unrolled gradient descent in parameter space on the data term ``½ ||A q(p) − k||²``:

``p ← clip_c(p − α_i ⊙ ∇_p ½||A q(p) − k||² − β_i ⊙ R(p))``,  ``i = 1 … n_iterations`` (10)

- ``p₀`` from an initialisation network (a small 2-D U-Net,
  :class:`~pinqi.networks.ParameterNet` without iteration conditioning) on the zero-filled images;
- ``R`` = two small CNNs, one on the M0 channels (Re, Im), one on R1, shared by all iterations
  (DOPAMINE's per-parameter regularisers);
- ``α_i``, ``β_i`` learnable, positive by a softplus; one pair per iteration and per parameter
  group (M0, R1). The PINQI paper speaks of scalar step sizes; a single scalar for M0 and R1
  together would have to serve gradients that differ by orders of magnitude, so each group gets
  its own (still scalar per iteration and group);
- every update is soft-clipped by a scaled tanh, ``u ↦ c · tanh(u / c)``, with ``c`` per channel
  above the dynamic range of the training parameters (the PINQI paper's stabilisation; ``clip``),
  and the result is clamped into the signal model's bounds.

The gradient of the data term is taken with autograd (``create_graph`` while training, so the
network learns through it). Training: brain-weighted MSE of the final (Re M0, Im M0, R1).

Normalisation: k-space is divided per sample by the 0.99 quantile of the zero-filled magnitude
(:func:`~pinqi.baselines.common.magnitude_scale`); M0 is estimated in those units and scaled back,
so DOPAMINE(a·k) = (a·M0, R1) for a > 0 from 1e-6 to 1e6 (tested; its networks see complex
images, so a global phase is not removed). Non-finite or all-zero inputs are refused.

Size at the defaults (T = 5): 397,955 parameters (initialisation U-Net of widths (16, 32, 64)
172,760; the two 5-layer, 64-filter CNNs 113,154 and 112,001; 40 step weights); the paper
reports 317,894 for its version (whose layer list it does not give).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from operators import MultiCoilCartesianOp

from ..networks import ParameterNet
from ..common.bounded import inverse_softplus
from .common import batch_item, check_kspace_inputs, magnitude_scale, weighted_map_mse

__all__ = ["DOPAMINE", "dopamine_loss", "dopamine_train_step"]


def plain_cnn(in_channels: int, out_channels: int, hidden: int, n_layers: int) -> nn.Sequential:
    """``n_layers`` 3x3 convolutions with ReLU between them (the last one linear, zero-initialised)."""
    if n_layers < 2:
        raise ValueError(f"n_layers must be >= 2; got {n_layers}")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU()]
    for _ in range(n_layers - 2):
        layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU()]
    last = nn.Conv2d(hidden, out_channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class DOPAMINE(nn.Module):
    """Learned unrolled gradient descent on the signal model in parameter space.

    Parameters
    ----------
    signal_model
        ``q(p)`` with p = (Re M0, Im M0, R1), e.g. ``SaturationRecovery(times)``; has ``bounds``.
    n_iterations
        Unrolled gradient steps (10).
    hidden, n_layers
        Filters and layers of each regularising CNN.
    init_features
        Widths of the initialisation U-Net.
    step_init, reg_init
        Initial ``α`` and ``β`` for (M0, R1).
    clip
        Soft-clipping threshold per parameter (Re M0, Im M0, R1) of each update, in normalised
        M0 units and 1/s.
    quantile
        Quantile of the zero-filled magnitude used for the normalisation.
    """

    def __init__(
        self,
        signal_model: nn.Module,
        n_iterations: int = 10,
        hidden: int = 64,
        n_layers: int = 5,
        init_features: Sequence[int] = (16, 32, 64),
        step_init: tuple[float, float] = (0.5, 0.5),
        reg_init: tuple[float, float] = (0.1, 0.1),
        clip: tuple[float, float, float] = (2.0, 2.0, 10.0),
        quantile: float = 0.99,
    ) -> None:
        super().__init__()
        if n_iterations < 1:
            raise ValueError(f"n_iterations must be positive; got {n_iterations}")
        bounds = getattr(signal_model, "bounds", None)
        if bounds is None or len(bounds[0]) != 3:
            raise ValueError("signal_model must have bounds for the 3 parameters (Re M0, Im M0, R1)")
        self.signal_model = signal_model
        self.n_times = int(signal_model.n_contrasts)
        self.n_iterations = n_iterations
        self.quantile = quantile
        self.register_buffer("lower", torch.tensor([float(v) for v in bounds[0]]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("upper", torch.tensor([float(v) for v in bounds[1]]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip", torch.tensor([float(c) for c in clip]).view(1, 3, 1, 1), persistent=False)
        self.init_net = ParameterNet(
            self.n_times, 3, bounds=bounds, initial_value=getattr(signal_model, "initial_value", None),
            features=init_features, max_iterations=1, normalize=False, film=False,
        )  # fmt: skip
        self.m0_net = plain_cnn(2, 2, hidden, n_layers)
        self.r1_net = plain_cnn(1, 1, hidden, n_layers)
        steps = [[inverse_softplus(s) for s in step_init]] * n_iterations
        regs = [[inverse_softplus(r) for r in reg_init]] * n_iterations
        self.raw_steps = nn.Parameter(torch.tensor(steps))
        self.raw_regs = nn.Parameter(torch.tensor(regs))

    @staticmethod
    def _per_channel(values: torch.Tensor) -> torch.Tensor:
        """(2,) for (M0, R1) -> (1, 3, 1, 1) for (Re M0, Im M0, R1)."""
        return torch.stack((values[0], values[0], values[1])).view(1, 3, 1, 1)

    def forward(
        self, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor, signal_model: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        """Estimate parameters from undersampled multi-coil k-space.

        Parameters
        ----------
        kspace
            ``(B, T, C, Y, X)`` complex, zeros where not sampled.
        csm
            ``(B, C, Y, X)`` complex coil maps.
        mask
            Sampling mask broadcastable to ``(B, T, Y, X)``.
        signal_model
            Overrides the model's ``q`` for this call (same parameters and bounds).

        Returns
        -------
        dict with ``"params"`` ``(B, 3, Y, X)`` (Re M0, Im M0 in data units, R1 [1/s]),
        ``"initial"`` (p₀, same layout), ``"iterates"`` (list of the normalised iterates) and
        ``"scale"`` ``(B,)``.
        """
        check_kspace_inputs(kspace, csm, mask, self.n_times)
        q = signal_model if signal_model is not None else self.signal_model
        operator = MultiCoilCartesianOp(csm, mask)
        zero_filled = operator.adjoint(kspace)
        scale = magnitude_scale(zero_filled, self.quantile)
        k = kspace / scale[:, None, None, None, None].to(kspace.dtype)
        dtype = self.raw_steps.dtype
        p = self.init_net(zero_filled / scale[:, None, None, None].to(zero_filled.dtype), 0).to(dtype)
        iterates = [p]
        create_graph = self.training and torch.is_grad_enabled()
        steps = F.softplus(self.raw_steps)
        regs = F.softplus(self.raw_regs)
        lower, upper, clip = self.lower.to(dtype), self.upper.to(dtype), self.clip.to(dtype)
        for i in range(self.n_iterations):
            with torch.enable_grad():
                point = p if p.requires_grad else p.detach().requires_grad_(True)
                residual = operator(q(point).to(k.dtype)) - k
                data_term = 0.5 * (residual.real.square() + residual.imag.square()).sum()
                (grad,) = torch.autograd.grad(data_term, point, create_graph=create_graph)
            reg = torch.cat((self.m0_net(p[:, :2]), self.r1_net(p[:, 2:])), dim=1)
            update = self._per_channel(steps[i]) * grad + self._per_channel(regs[i]) * reg
            p = p - clip * torch.tanh(update / clip)
            p = torch.maximum(torch.minimum(p, upper), lower)
            iterates.append(p)
        m0_scale = scale.to(dtype)[:, None, None, None]
        unscale = torch.cat((m0_scale.expand(-1, 2, 1, 1), torch.ones_like(m0_scale)), dim=1)
        return {"params": p * unscale, "initial": iterates[0] * unscale, "iterates": iterates, "scale": scale}


def dopamine_loss(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], outside_weight: float = 0.1
) -> torch.Tensor:
    """Brain-weighted MSE of the final (Re M0, Im M0, R1) against ``batch["params"]``."""
    target = batch_item(batch, "params")
    return weighted_map_mse(outputs["params"], target.to(outputs["params"].dtype), batch.get("brain_mask"), outside_weight)


def dopamine_train_step(
    model: DOPAMINE,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, torch.Tensor],
    outside_weight: float = 0.1,
    max_grad_norm: float | None = 1.0,
) -> torch.Tensor:
    """One optimisation step; returns the detached loss. Non-finite gradients raise ``FloatingPointError``."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    outputs = model(batch_item(batch, "kspace"), batch_item(batch, "csm"), batch_item(batch, "mask"))
    loss = dopamine_loss(outputs, batch, outside_weight)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm, error_if_nonfinite=True)
    optimizer.step()
    return loss.detach()
