"""MANTIS (Liu, Feng & Kijowski, MRM 2019) adapted to saturation-recovery T1 mapping.

A pix2pix-style U-Net maps the magnitudes of the zero-filled, SENSE-combined images directly to
(|M0|, R1). The physics enters only through the training loss (map MSE + k-space consistency).

Design decisions
----------------
- Input normalisation: the magnitudes are divided per sample by the 0.99 quantile of the
  zero-filled magnitude over (T, Y, X) (:func:`~pinqi.baselines.common.magnitude_scale`); the
  network predicts |M0| in those units and the output is multiplied back, so |M0| comes out in
  the units of the data. R1 is scale-free. Hence MANTIS(a·k) = (|a|·|M0|, R1) for any complex
  a, |a| from 1e-6 to 1e6 (tested; the magnitude input also removes a global phase). Non-finite
  or all-zero inputs are refused (:func:`~pinqi.baselines.common.check_kspace_inputs`).
- Heads: softplus on both output channels (|M0| ≥ 0, R1 > 0); the last layer's bias starts at
  softplus⁻¹(1), i.e. |M0| = the data's scale and R1 = 1 /s.
- MANTIS sees magnitudes only and cannot predict the phase of M0. Its k-space loss therefore
  uses M0 = |M0| · e^{iφ} with φ the phase of the zero-filled coil-combined image of the frame
  with the most energy (the longest saturation time): a phase reference taken from the measured
  data, never from the target. It is exact for fully sampled data; under undersampling the
  aliased phase makes the term nonzero even for exact maps, which the map MSE dominates anyway
  (the paper found the k-space weight to matter little).
- k-space term: ``Σ |A q(p) − k|² / (number of sampled (b, t, y, x) locations)``, i.e. summed
  over coils and averaged over sampled locations: for fully sampled data and Σ_c|csm_c|² = 1 it
  equals the per-pixel image-domain MSE, so its scale is that of the |M0| part of the map MSE.
- Architecture (pix2pix, Isola et al. 2017): encoder of 4x4 stride-2 convolutions, LeakyReLU(0.2)
  before each but the first and batch norm after each but the first; decoder of ReLU -> 4x4
  stride-2 transposed convolution -> batch norm (-> dropout in the three deepest blocks), each
  concatenated with the matching encoder output; a last ReLU -> transposed convolution to 2
  channels. Inputs not divisible by ``2**len(features)`` are zero-padded and cropped back.

Size at the paper configuration (T = 5, default features): 29,245,122 parameters
(the paper reports 29,248,258 for its implementation, which — by the arithmetic of these layer
shapes — had 8 input channels and a batch norm, without bias, after the first convolution; at
T = 8 this class has 29,248,194, differing only in that first layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from operators import LinearOperator, MultiCoilCartesianOp

from ..common.bounded import inverse_softplus
from .common import (
    batch_item,
    check_kspace_inputs,
    crop_padding,
    magnitude_scale,
    magnitude_to_params,
    pad_to_multiple,
    params_to_magnitude,
    reference_phase,
    weighted_map_mse,
)

__all__ = ["MANTIS", "mantis_loss", "mantis_kspace_loss", "mantis_train_step"]

PAPER_FEATURES = (64, 128, 256, 512, 512, 512)


class MANTIS(nn.Module):
    """Zero-filled magnitude images -> (|M0|, R1) with a pix2pix U-Net.

    Parameters
    ----------
    n_times
        Number of acquisitions T (input channels).
    features
        Encoder widths; ``len(features)`` stride-2 levels (the paper's: 64-128-256-512-512-512).
    dropout
        Dropout probability in the three deepest decoder blocks (pix2pix uses 0.5; default off).
    quantile
        Quantile of the zero-filled magnitude used for the per-sample normalisation.
    """

    def __init__(
        self,
        n_times: int,
        features: Sequence[int] = PAPER_FEATURES,
        dropout: float = 0.0,
        quantile: float = 0.99,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if n_times < 1:
            raise ValueError(f"n_times must be positive; got {n_times}")
        if len(features) < 2 or any(f < 1 for f in features):
            raise ValueError(f"features must hold at least two positive widths; got {features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}")
        self.n_times = n_times
        self.features = features
        self.quantile = quantile

        def down(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=bias)

        def up(cin: int, cout: int, bias: bool = False) -> nn.ConvTranspose2d:
            return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)

        encoders: list[nn.Module] = [down(n_times, features[0], bias=True)]
        for cin, cout in zip(features[:-1], features[1:]):
            encoders.append(nn.Sequential(nn.LeakyReLU(0.2), down(cin, cout), nn.BatchNorm2d(cout)))
        self.encoders = nn.ModuleList(encoders)

        decoders: list[nn.Module] = []
        n = len(features)
        for depth, i in enumerate(range(n - 2, -1, -1)):
            cin = features[i + 1] * (1 if i == n - 2 else 2)
            block: list[nn.Module] = [nn.ReLU(), up(cin, features[i]), nn.BatchNorm2d(features[i])]
            if dropout > 0 and depth < 3:
                block.append(nn.Dropout(dropout))
            decoders.append(nn.Sequential(*block))
        self.decoders = nn.ModuleList(decoders)
        self.head = nn.Sequential(nn.ReLU(), up(2 * features[0], 2, bias=True))
        with torch.no_grad():
            self.head[1].bias.fill_(inverse_softplus(1.0))

    def forward(self, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict magnitude maps from undersampled multi-coil k-space.

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
        dict with ``"m0_abs"`` ``(B, Y, X)`` (data units), ``"r1"`` ``(B, Y, X)`` [1/s],
        ``"zero_filled"`` ``(B, T, Y, X)`` complex (the SENSE-combined input, kept for the
        k-space loss' phase reference) and ``"scale"`` ``(B,)`` (the normalisation constant).
        """
        check_kspace_inputs(kspace, csm, mask, self.n_times)
        zero_filled = MultiCoilCartesianOp(csm, mask).adjoint(kspace)
        scale = magnitude_scale(zero_filled, self.quantile)
        dtype = next(self.parameters()).dtype
        x = (zero_filled.abs() / scale[:, None, None, None]).to(dtype)
        out = F.softplus(self._unet(x))
        return {
            "m0_abs": out[:, 0] * scale[:, None, None].to(dtype),
            "r1": out[:, 1],
            "zero_filled": zero_filled,
            "scale": scale,
        }

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = pad_to_multiple(x, 2 ** len(self.features))
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        x = skips.pop()
        for decoder in self.decoders:
            x = torch.cat((skips.pop(), decoder(x)), dim=1)
        return crop_padding(self.head(x), padding)

    @staticmethod
    def to_params(outputs: Mapping[str, torch.Tensor], phase: torch.Tensor | None = None) -> torch.Tensor:
        """Full parameters (Re M0, Im M0, R1) ``(B, 3, Y, X)`` from the outputs.

        MANTIS has no phase: without ``phase`` the result is (|M0|, 0, R1); pass e.g.
        ``reference_phase(outputs["zero_filled"])`` for a data-derived phase.
        """
        return magnitude_to_params(outputs["m0_abs"], outputs["r1"], phase)


def mantis_kspace_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    signal_model: nn.Module,
    operator: LinearOperator,
) -> torch.Tensor:
    """k-space consistency ``Σ |A q(|M0| e^{iφ}, R1) − k|² / #sampled locations``.

    φ is the phase of the zero-filled image's highest-energy frame (see the module notes).
    ``operator`` must be the encoding operator of ``batch`` (e.g.
    ``MultiCoilCartesianOp(batch["csm"], batch["mask"])``).
    """
    kspace = batch_item(batch, "kspace")
    mask = torch.broadcast_to(batch_item(batch, "mask"), (kspace.shape[0], kspace.shape[1], *kspace.shape[-2:]))
    if "zero_filled" in outputs:
        phase = reference_phase(outputs["zero_filled"])
    else:
        phase = reference_phase(operator.adjoint(kspace))
    params = magnitude_to_params(outputs["m0_abs"], outputs["r1"], phase.to(outputs["m0_abs"].dtype))
    residual = operator(signal_model(params)) - kspace
    n_sampled = mask.to(residual.real.dtype).sum().clamp(min=1.0)
    return residual.abs().square().sum() / n_sampled


def mantis_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    signal_model: nn.Module,
    operator: LinearOperator,
    kspace_weight: float = 0.1,
    outside_weight: float = 0.1,
) -> torch.Tensor:
    """MANTIS training loss: brain-weighted MSE of (|M0|, R1) + ``kspace_weight`` × k-space term.

    Parameters
    ----------
    outputs
        What :meth:`MANTIS.forward` returned.
    batch
        Holds ``"kspace"``, ``"mask"``, ``"params"`` (target (Re M0, Im M0, R1)) and optionally
        ``"brain_mask"`` ``(B, Y, X)`` (uniform weights without it).
    signal_model
        ``q(p)``: ``(B, 3, Y, X)`` -> ``(B, T, Y, X)`` complex, e.g. ``SaturationRecovery(times)``.
    operator
        The encoding operator of the batch.
    kspace_weight
        Weight of the k-space term (0 switches it off and skips its computation).
    outside_weight
        Map-loss weight of pixels outside the brain.
    """
    target = params_to_magnitude(batch_item(batch, "params"))
    prediction = torch.stack((outputs["m0_abs"], outputs["r1"]), dim=1)
    loss = weighted_map_mse(prediction, target.to(prediction.dtype), batch.get("brain_mask"), outside_weight)
    if kspace_weight != 0:
        loss = loss + kspace_weight * mantis_kspace_loss(outputs, batch, signal_model, operator)
    return loss


def mantis_train_step(
    model: MANTIS,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, torch.Tensor],
    signal_model: nn.Module,
    kspace_weight: float = 0.1,
    outside_weight: float = 0.1,
    max_grad_norm: float | None = 1.0,
) -> torch.Tensor:
    """One optimisation step of MANTIS on ``batch``; returns the (detached) loss.

    Gradients are clipped to ``max_grad_norm`` (None: no clipping); a step whose gradients are
    not finite raises ``FloatingPointError`` instead of corrupting the weights.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    outputs = model(batch_item(batch, "kspace"), batch_item(batch, "csm"), batch_item(batch, "mask"))
    operator = MultiCoilCartesianOp(batch["csm"], batch["mask"])
    loss = mantis_loss(outputs, batch, signal_model, operator, kspace_weight, outside_weight)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm, error_if_nonfinite=True)
    optimizer.step()
    return loss.detach()
