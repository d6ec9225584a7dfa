"""DeepT1 (Jeelani et al., 2020) adapted to multi-coil saturation-recovery T1 mapping.

Two separately trained stages:

1. image stage: a convolutional recurrent network (CRNN-MRI, Qin et al. 2018) alternates with
   CG data consistency for ``n_iterations`` (5) unrolled iterations, reconstructing the complex
   image series from the zero-filled SENSE combination. Per iteration
   ``x ← x + CRNN(x)``, then ``x ← argmin ||A x − k||² + λ_i ||x − x_net||²`` solved by
   :func:`solvers.data_consistency` (the multi-coil replacement of the original single-coil
   layer), with learnable ``λ_i = softplus_5(λ̃_i)``.
   CRNN, 5 layers of 64 filters: one bidirectional convolutional RNN layer over the T images
   (forward and backward passes share the convolutions, have separate biases, and are summed),
   three convolutional layers recurrent over the unrolled iterations, one convolution back to
   (Re, Im). Every layer also receives its own hidden state of the previous iteration.
2. map stage: a plain U-Net (:class:`~pinqi.baselines.common.MapUNet`, 4 poolings, widths
   64-128-256-512, no growth at the bottom) maps the magnitudes of the reconstructed images to
   (|M0|, R1) through softplus heads.

Normalisation: both stages work in units of the per-sample 0.99 quantile of the zero-filled
magnitude (k-space is divided by it too, so data consistency is unchanged); images and |M0| are
returned in the units of the data. Hence DeepT1(a·k) gives (|a|·|M0|, R1) for any complex a, |a|
from 1e-6 to 1e6 (tested; the map stage sees magnitudes), and images a·images for a > 0 (the CRNN
sees complex images, so a global phase is not removed from them). Non-finite or all-zero inputs
are refused.

Training: ``set_stage("image")`` trains the CRNN and the λ on :func:`deept1_image_loss`
(complex L1 of the images), ``set_stage("map")`` trains the U-Net on :func:`deept1_map_loss`
with the image stage frozen and run without gradient; ``"joint"`` (the default) leaves all
parameters trainable (end to end through both stages).

Size at the paper configuration (T = 5): image stage 297,538 weights + 5 λ (the paper's count,
297,538, matches the convolutional weights exactly); map stage 20,546,178 weights (the paper's
20,547,906 is this U-Net with 8 input channels, i.e. T = 8: this class gives exactly that there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from operators import MultiCoilCartesianOp
from solvers.data_consistency import data_consistency

from ..common.bounded import inverse_softplus
from .common import (
    MapUNet,
    batch_item,
    channels_to_complex,
    check_kspace_inputs,
    complex_to_channels,
    magnitude_scale,
    magnitude_to_params,
    params_to_magnitude,
    weighted_map_mse,
)

__all__ = ["CRNN", "DeepT1", "deept1_image_loss", "deept1_map_loss", "deept1_train_step"]

STAGES = ("image", "map", "joint")
_LAMBDA_BETA = 5.0


def _conv(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class _BidirectionalCRNN(nn.Module):
    """Convolutional RNN run forward and backward over T; the two outputs are summed.

    ``h_t = ReLU(W_x * x_t + W_h * h_{t∓1} + W_i * h^{prev iteration}_t + b_direction)``
    """

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.input = _conv(in_channels, hidden, bias=False)
        self.recurrent = _conv(hidden, hidden, bias=False)
        self.iteration = _conv(hidden, hidden, bias=False)
        self.bias_forward = nn.Parameter(torch.zeros(hidden))
        self.bias_backward = nn.Parameter(torch.zeros(hidden))
        self.hidden = hidden

    def forward(self, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """``x`` ``(T, N, C, Y, X)``, ``previous`` ``(T, N, H, Y, X)`` -> ``(T, N, H, Y, X)``."""
        n_times = x.shape[0]
        # the input and iteration terms do not depend on the recursion: one batched conv each
        driven = self.input(x.flatten(0, 1)) + self.iteration(previous.flatten(0, 1))
        driven = driven.unflatten(0, (n_times, x.shape[1]))
        outputs = []
        for order, bias in ((range(n_times), self.bias_forward), (range(n_times - 1, -1, -1), self.bias_backward)):
            state = torch.zeros_like(driven[0])
            states = [state] * n_times
            for t in order:
                state = F.relu(driven[t] + self.recurrent(state) + bias[:, None, None])
                states[t] = state
            outputs.append(torch.stack(states))
        return outputs[0] + outputs[1]


class _IterationCRNN(nn.Module):
    """Convolution recurrent over the unrolled iterations: ``ReLU(W_x * x + b + W_i * h^{prev})``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.input = _conv(hidden, hidden, bias=True)
        self.iteration = _conv(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return F.relu(self.input(x) + self.iteration(previous))


class CRNN(nn.Module):
    """CRNN-MRI regulariser: complex ``(B, T, Y, X)`` -> residual update of the same shape.

    Parameters
    ----------
    hidden
        Filters of every layer (64).
    n_layers
        Layers per application: 1 bidirectional + ``n_layers - 2`` iteration-recurrent + 1 output.
    """

    def __init__(self, hidden: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"n_layers must be at least 2 (bidirectional + output); got {n_layers}")
        self.bidirectional = _BidirectionalCRNN(2, hidden)
        self.layers = nn.ModuleList(_IterationCRNN(hidden) for _ in range(n_layers - 2))
        self.output = _conv(hidden, 2, bias=True)
        self.hidden = hidden

    def initial_state(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Zero hidden states for a complex input ``(B, T, Y, X)``."""
        b, t, y, x_ = x.shape
        dtype = self.output.weight.dtype
        zeros = torch.zeros(t, b, self.hidden, y, x_, dtype=dtype, device=x.device)
        return [zeros] + [zeros.flatten(0, 1)] * len(self.layers)

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One application: ``(update (B, T, Y, X) complex, new hidden states)``."""
        channels = complex_to_channels(x).to(self.output.weight.dtype)
        n_times, n_batch = channels.shape[:2]
        h = self.bidirectional(channels, state[0])
        new_state = [h]
        z = h.flatten(0, 1)
        for layer, previous in zip(self.layers, state[1:]):
            z = layer(z, previous)
            new_state.append(z)
        update = self.output(z).unflatten(0, (n_times, n_batch))
        return channels_to_complex(update).to(x.dtype), new_state


class DeepT1(nn.Module):
    """Unrolled CRNN + CG reconstruction of the images, then a U-Net to (|M0|, R1).

    Parameters
    ----------
    n_times
        Number of acquisitions T.
    hidden, n_layers
        CRNN filters and layers (64, 5).
    n_iterations
        Unrolled CRNN / data-consistency iterations (5).
    map_features
        Encoder widths of the map U-Net (64, 128, 256, 512).
    lambda_init
        Initial data-consistency weight λ (relative to an operator of norm ~1).
    dc_tol, dc_max_iter
        CG stopping rule of the data-consistency solves.
    quantile
        Quantile of the zero-filled magnitude used for the per-sample normalisation.
    """

    def __init__(
        self,
        n_times: int,
        hidden: int = 64,
        n_layers: int = 5,
        n_iterations: int = 5,
        map_features: Sequence[int] = (64, 128, 256, 512),
        lambda_init: float = 1.0,
        dc_tol: float = 1e-6,
        dc_max_iter: int = 100,
        quantile: float = 0.99,
    ) -> None:
        super().__init__()
        if n_times < 1:
            raise ValueError(f"n_times must be positive; got {n_times}")
        if n_iterations < 1:
            raise ValueError(f"n_iterations must be positive; got {n_iterations}")
        self.n_times = n_times
        self.crnn = CRNN(hidden, n_layers)
        self.lambdas_raw = nn.Parameter(torch.full((n_iterations,), inverse_softplus(lambda_init, _LAMBDA_BETA)))
        self.map_net = MapUNet(n_times, 2, map_features)
        with torch.no_grad():
            self.map_net.head.bias.fill_(inverse_softplus(1.0))
        self.dc_tol = dc_tol
        self.dc_max_iter = dc_max_iter
        self.quantile = quantile
        self.stage = "joint"

    @property
    def lambdas(self) -> torch.Tensor:
        """``(n_iterations,)`` positive data-consistency weights."""
        return F.softplus(self.lambdas_raw, beta=_LAMBDA_BETA)

    def image_parameters(self) -> list[nn.Parameter]:
        """Parameters of the image stage (CRNN and λ)."""
        return [*self.crnn.parameters(), self.lambdas_raw]

    def map_parameters(self) -> list[nn.Parameter]:
        """Parameters of the map stage (U-Net)."""
        return list(self.map_net.parameters())

    def set_stage(self, stage: str) -> DeepT1:
        """Choose what trains: ``"image"``, ``"map"`` or ``"joint"`` (everything).

        The other stage's parameters get ``requires_grad = False``, are kept in eval mode, and
        run without gradient in :meth:`forward`.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}; got {stage!r}")
        self.stage = stage
        for p in self.image_parameters():
            p.requires_grad_(stage != "map")
        for p in self.map_parameters():
            p.requires_grad_(stage != "image")
        return self.train(self.training)

    def train(self, mode: bool = True) -> DeepT1:
        super().train(mode)
        if self.stage == "image":
            self.map_net.eval()
        elif self.stage == "map":
            self.crnn.eval()
        return self

    def forward(self, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruct images and maps from undersampled multi-coil k-space.

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
        dict with ``"images"`` ``(B, T, Y, X)`` complex, ``"m0_abs"`` ``(B, Y, X)``, ``"r1"``
        ``(B, Y, X)`` [1/s], ``"zero_filled"`` ``(B, T, Y, X)`` and ``"scale"`` ``(B,)``.
        """
        check_kspace_inputs(kspace, csm, mask, self.n_times)
        operator = MultiCoilCartesianOp(csm, mask)
        zero_filled = operator.adjoint(kspace)
        scale = magnitude_scale(zero_filled, self.quantile)
        image_scale = scale[:, None, None, None].to(zero_filled.dtype)
        with torch.no_grad() if self.stage == "map" else nullcontext():
            images = self._reconstruct(operator, kspace / image_scale[:, :, None], zero_filled / image_scale)
        with torch.no_grad() if self.stage == "image" else nullcontext():
            dtype = self.map_net.head.weight.dtype
            maps = F.softplus(self.map_net(images.abs().to(dtype)))
        return {
            "images": images * image_scale,
            "m0_abs": maps[:, 0] * scale[:, None, None].to(dtype),
            "r1": maps[:, 1],
            "zero_filled": zero_filled,
            "scale": scale,
        }

    def _reconstruct(self, operator: MultiCoilCartesianOp, kspace: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        state = self.crnn.initial_state(x)
        for lam in self.lambdas:
            update, state = self.crnn(x, state)
            x = x + update
            x = data_consistency(
                operator, kspace, [(lam.to(x.real.dtype), x)], x0=x, tol=self.dc_tol, max_iter=self.dc_max_iter
            )
        return x

    @staticmethod
    def to_params(outputs: Mapping[str, torch.Tensor], phase: torch.Tensor | None = None) -> torch.Tensor:
        """(Re M0, Im M0, R1) ``(B, 3, Y, X)``; without ``phase`` (|M0|, 0, R1).

        The reconstructed images carry a phase: ``reference_phase(outputs["images"])`` is a
        natural choice.
        """
        return magnitude_to_params(outputs["m0_abs"], outputs["r1"], phase)


def deept1_image_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    signal_model: nn.Module | None = None,
) -> torch.Tensor:
    """Complex L1 of the reconstructed images: mean over all pixels of ``|ŷ − y|``.

    The target ``y`` is ``batch["images"]`` (the noise-free image series), or, if the batch has
    none, ``signal_model(batch["params"])``.
    """
    if "images" in batch:
        target = batch["images"]
    elif signal_model is not None:
        target = signal_model(batch_item(batch, "params"))
    else:
        raise KeyError(
            "deept1_image_loss needs batch['images'] or a signal_model to simulate them from batch['params']"
        )
    prediction = outputs["images"]
    if prediction.shape != target.shape:
        raise ValueError(f"images shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    return (prediction - target.to(prediction.dtype)).abs().mean()


def deept1_map_loss(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], outside_weight: float = 0.1
) -> torch.Tensor:
    """Brain-weighted MSE of (|M0|, R1) against the target ``batch["params"]``."""
    target = params_to_magnitude(batch_item(batch, "params"))
    prediction = torch.stack((outputs["m0_abs"], outputs["r1"]), dim=1)
    return weighted_map_mse(prediction, target.to(prediction.dtype), batch.get("brain_mask"), outside_weight)


def deept1_train_step(
    model: DeepT1,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, torch.Tensor],
    signal_model: nn.Module | None = None,
    outside_weight: float = 0.1,
    max_grad_norm: float | None = 1.0,
) -> torch.Tensor:
    """One optimisation step in the model's current stage; returns the (detached) loss.

    Stage ``"image"`` minimises :func:`deept1_image_loss`, ``"map"`` and ``"joint"``
    :func:`deept1_map_loss`. Gradients are clipped to ``max_grad_norm`` (None: no clipping);
    non-finite gradients raise ``FloatingPointError``.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    outputs = model(batch_item(batch, "kspace"), batch_item(batch, "csm"), batch_item(batch, "mask"))
    if model.stage == "image":
        loss = deept1_image_loss(outputs, batch, signal_model)
    else:
        loss = deept1_map_loss(outputs, batch, outside_weight)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm, error_if_nonfinite=True)
    optimizer.step()
    return loss.detach()
