"""Ablations (h) and (i) of the PINQI paper: a learned image reconstruction plus a signal fit.

:class:`ImageReconstruction` is PINQI with the parameter side removed: from the same y₀ (a few CG
iterations on the normal equations), ``n_iterations`` times ``y ← (AᴴA + λ_y,i)⁻¹(Aᴴk + λ_y,i Y_θ(y, i))``
with the same image U-Net Y_θ (:class:`pinqi.networks.ImageNet`, PINQI's widths) and learnable
``λ_y,i``. Then:

(h) ``"separate"``: trained on the brain-weighted MSE of the complex images against the noise-free
    images (plus 0.05 × that of every earlier iterate, as PINQI's deep supervision); at inference
    a pixel-wise nonlinear least-squares fit (:func:`pinqi.baselines.classical.pixelwise_fit`,
    per-pixel L-BFGS from a grid-search start; the paper used BFGS) gives p.
(i) ``"end-to-end"``: the same network followed by one differentiable nonlinear fit layer
    (:func:`solvers.nonlinear_fit`, implicit backward) trained on the MSE of p. The fit starts at
    the grid-search value p_g of the (detached) final image and has a small Tikhonov pull
    ``λ_fit ||p − p_g||²`` (λ_fit = 0.01 against a signal energy Σ_t|q_t|² of order 1 inside the
    head): without it the background (M0 ≈ 0, R1 unidentifiable) has singular Hessians and the
    implicit gradient blows up there.

PINQI's own switches cannot express these (``use_signal_model=False`` makes p = P_θ(y), ablation
(a)), hence this small module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from operators import MultiCoilCartesianOp
from pinqi.baselines.classical import grid_initial_value, pixelwise_fit
from pinqi.config import PINQIConfig
from pinqi.losses import masked_mse
from pinqi.networks import ImageNet
from solvers import cg, data_consistency, nonlinear_fit

MODES = ("separate", "end-to-end")


class ImageReconstruction(nn.Module):
    """Unrolled Y_θ + data-consistency image reconstruction with a final signal fit.

    Parameters
    ----------
    signal_model
        ``q(p)``, e.g. ``SaturationRecovery(times)``, with ``bounds``.
    config
        PINQI configuration: ``n_iterations``, ``image_features``, ``lambda_y``, CG and fit settings.
    mode
        ``"separate"`` (h) or ``"end-to-end"`` (i).
    fit_lambda
        Tikhonov weight of the end-to-end fit towards its grid-search start.
    """

    def __init__(self, signal_model: nn.Module, config: PINQIConfig, mode: str, fit_lambda: float = 0.01) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        self.signal_model = signal_model
        self.config = config
        self.mode = mode
        self.fit_lambda = fit_lambda
        self.n_times = int(signal_model.n_contrasts)
        self.image_net = ImageNet(
            features=config.image_features, max_iterations=config.n_iterations + 1, checkpoint=config.checkpoint_networks
        )
        beta = config.softplus_beta
        raw = math.log(math.expm1(beta * config.lambda_y)) / beta
        self.raw_lambda_y = nn.Parameter(torch.full((config.n_iterations,), raw))

    def reconstruct(self, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The images ``(B, T, Y, X)`` of every iteration, y₀ first."""
        cfg = self.config
        operator = MultiCoilCartesianOp(csm, mask)
        with torch.no_grad():
            y = operator.adjoint(kspace)
            if cfg.init_cg_iterations > 0:
                y = cg(operator.gram, y, tol=0.0, max_iter=cfg.init_cg_iterations).x
        lambdas = F.softplus(self.raw_lambda_y, beta=cfg.softplus_beta)
        images = [y]
        for i in range(1, cfg.n_iterations + 1):
            y = data_consistency(
                operator, kspace, [(lambdas[i - 1], self.image_net(y, i))], x0=y.detach(),
                tol=cfg.cg_tol, max_iter=cfg.cg_max_iter,
            )  # fmt: skip
            images.append(y)
        return images

    def fit(self, images: torch.Tensor) -> torch.Tensor:
        """Parameters ``(B, 3, Y, X)`` from the final images (see the module notes)."""
        q = self.signal_model
        if self.mode == "separate":
            return pixelwise_fit(q, images, max_iter=self.config.fit_max_iter)
        start = _strictly_inside(grid_initial_value(q, images.detach()), q.bounds)
        return nonlinear_fit(
            q, images, start, self.fit_lambda, p0=start, bounds=q.bounds, solver=self.config.fit_solver,
            implicit=True, max_iter=self.config.fit_max_iter, tol=self.config.fit_tol,
        )  # fmt: skip

    def forward(self, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor) -> dict[str, object]:
        """``{"images": list of (B, T, Y, X), "params": (B, 3, Y, X) or None}``.

        In ``"separate"`` mode the fit runs only outside training (it is post-processing).
        """
        images = self.reconstruct(kspace, csm, mask)
        params = None
        if self.mode == "end-to-end" or not self.training:
            params = self.fit(images[-1])
        return {"images": images, "params": params}


def _strictly_inside(params: torch.Tensor, bounds: tuple, margin: float = 1e-3) -> torch.Tensor:
    """Clamp every parameter ``margin`` x its range inside finite bounds (the solver's box is open)."""
    channels = []
    for i, (low, high) in enumerate(zip(bounds[0], bounds[1])):
        pad = margin * (high - low) if math.isfinite(low) and math.isfinite(high) else 0.0
        channels.append(params[:, i].clamp(
            min=low + pad if math.isfinite(low) else None, max=high - pad if math.isfinite(high) else None
        ))  # fmt: skip
    return torch.stack(channels, dim=1)


def image_mse(prediction: torch.Tensor, target: torch.Tensor, brain_mask: torch.Tensor, outside_weight: float) -> torch.Tensor:
    """Brain-weighted MSE of complex images ``(B, T, Y, X)`` (|·|² summed over T)."""
    weight = brain_mask.to(prediction.real.dtype) * (1.0 - outside_weight) + outside_weight
    squared = (prediction - target.to(prediction.dtype)).abs().square().sum(dim=1)
    return ((weight * squared).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1))).mean()


def regression_loss(
    model: ImageReconstruction,
    outputs: Mapping[str, object],
    batch: Mapping[str, torch.Tensor],
    outside_weight: float = 0.1,
    deep_supervision: float = 0.05,
) -> torch.Tensor:
    """(h): image MSE of the last iterate + ``deep_supervision`` × earlier ones; (i): MSE of p."""
    if model.mode == "end-to-end":
        return masked_mse(outputs["params"], batch["params"], batch["brain_mask"], outside_weight)
    images: list[torch.Tensor] = outputs["images"]  # type: ignore[assignment]
    loss = image_mse(images[-1], batch["images"], batch["brain_mask"], outside_weight)
    for earlier in images[1:-1]:
        loss = loss + deep_supervision * image_mse(earlier, batch["images"], batch["brain_mask"], outside_weight)
    return loss
