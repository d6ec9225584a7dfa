"""W2Q: quantitative maps (PD, T1 [s], T2 [s]) from weighted images (T1w, T2w, FLAIR).

Pipeline of :meth:`W2Q.forward` for images ``y`` ``(B, T, Y, X)`` (T = 3 slots: T1w, T2w,
FLAIR; any non-empty subset *available*), each with its protocol (TR, TE, TI, FA, sequence type):

1. **Normalise** (:func:`pinqi.w2q.scale.normalise_images`): ``ỹ_c = y_c / m_c``, ``m_c`` the 95th
   percentile in the brain. Unavailable contrasts are zeroed before the network sees them.
2. **Network** (:class:`pinqi.w2q.networks.W2QNet`): per-contrast encoders FiLM-conditioned on a
   protocol embedding at every level, fused over the available contrasts, decoded to
   ``p_reg⁰ = (PD, T1, T2)``.
3. **Reference scale** (:func:`pinqi.w2q.scale.white_matter_reference`) from ``p_reg⁰``.
4. For ``k = 1 .. K`` (``n_iterations``):

   * closed-form scale ``s_c`` = least squares between ``q_c(p_reg)`` and ``ỹ_c`` in the brain,
     clamped to ±20 % of the reference (:func:`pinqi.w2q.scale.fit_scale`);
   * the fit layer (:func:`solvers.nonlinear_fit`, acquisition operator = identity):
     ``p_k = argmin Σ_c a_c |q_c(p) − ỹ_c / s_c|² + Σ_i λ_{k,i} (u_i(p) − u_i(p_reg))²`` pixel by
     pixel in the brain, with ``u = (PD, ln T1, ln T2)``, ``a_c`` the availability, ``q_c`` each
     contrast's own signal model and protocol, ``λ_k`` three learned weights (softplus);
   * for ``k < K`` the network refines: ``p_reg = W2QNet.decode(fit state of p_k)``.

   The output ``p_K`` is a solution of the fit problem for the input images, i.e. physically
   consistent with them by construction (to within the learned prior weight λ).

The per-sample signal models and the protocol features live in :mod:`pinqi.w2q.signal`.
``n_iterations = 0`` gives the embedding network alone (a baseline); ``network = "plain"`` gives the
U-Net baseline without sequence information (:class:`pinqi.w2q.networks.PlainUNet`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from solvers.nonlinear_fit import nonlinear_fit

from ..common.bounded import inverse_softplus
from .config import W2QConfig
from .networks import MAP_LOWER, MAP_UPPER, PlainUNet, W2QNet
from .protocols import CONTRASTS, check_protocol
from .scale import fit_scale, fit_smooth_field, normalise_images, white_matter_reference
from .signal import N_PROTOCOL_FEATURES, MultiContrastSignal, protocol_features
from .uncertainty import fit_uncertainty

__all__ = ["W2Q", "W2QOutput", "LOG_BOUNDS", "to_log_maps", "from_log_maps"]

#: Bounds of the fit's unknowns u = (PD, ln T1, ln T2) (see :func:`to_log_maps`).
LOG_BOUNDS = (
    (MAP_LOWER[0], math.log(MAP_LOWER[1]), math.log(MAP_LOWER[2])),
    (MAP_UPPER[0], math.log(MAP_UPPER[1]), math.log(MAP_UPPER[2])),
)


def _relative_scale(intensity_scale: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Known scales ``(B, T)`` in the images' units, checked, in units of the normalised images."""
    if not isinstance(intensity_scale, torch.Tensor) or intensity_scale.shape != factors.shape \
            or not bool((intensity_scale > 0).all()):
        got = tuple(intensity_scale.shape) if isinstance(intensity_scale, torch.Tensor) else type(intensity_scale).__name__
        raise ValueError(f"intensity_scale must be a positive tensor (B, T) = {tuple(factors.shape)}; got {got}")
    return intensity_scale.to(factors.dtype) / factors


def to_log_maps(p: torch.Tensor) -> torch.Tensor:
    """(PD, T1, T2) maps ``(B, 3, Y, X)`` -> the fit's unknowns (PD, ln T1, ln T2)."""
    return torch.cat([p[:, :1], p[:, 1:].log()], 1)


def from_log_maps(u: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_log_maps`."""
    return torch.cat([u[:, :1], u[:, 1:].exp()], 1)


@dataclass
class W2QOutput:
    """What :meth:`W2Q.forward` returns (all maps ``(B, 3, Y, X)`` = PD, T1 [s], T2 [s]).

    Attributes
    ----------
    fits
        The K fit-layer solutions ``p_1 .. p_K`` (empty for K = 0).
    network
        The network outputs ``p_reg⁰ .. p_reg^{K-1}``.
    scales
        The K global scales ``(B, T)`` used by the fits.
    fields
        The K relative smooth fields ``(B, T, Y, X)`` (ones when ``field_degree = 0``).
    reference
        ``(B, T)`` reference scales.
    normalised, factors
        ``(B, T, Y, X)`` normalised images ``ỹ`` (all contrasts, also unavailable ones) and their
        divisors ``(B, T)``.
    available, brain_mask
        ``(B, T)`` and ``(B, Y, X)`` bool.
    signal
        The :class:`MultiContrastSignal` of the protocol.
    """

    fits: list[torch.Tensor]
    network: list[torch.Tensor]
    scales: list[torch.Tensor]
    fields: list[torch.Tensor]
    reference: torch.Tensor
    normalised: torch.Tensor
    factors: torch.Tensor
    available: torch.Tensor
    brain_mask: torch.Tensor
    signal: MultiContrastSignal = field(repr=False)

    @property
    def final(self) -> torch.Tensor:
        """The output maps: the last fit (or the network's output when K = 0)."""
        return self.fits[-1] if self.fits else self.network[-1]

    @property
    def intermediate(self) -> list[torch.Tensor]:
        """Every estimate before the final one (for deep supervision)."""
        return (self.network + self.fits)[:-1] if self.fits else self.network[:-1]


class W2Q(nn.Module):
    """Weighted images to quantitative maps (module docstring).

    Parameters
    ----------
    config
        :class:`W2QConfig`.
    """

    def __init__(self, config: W2QConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or W2QConfig()
        self.n_contrasts = len(CONTRASTS)
        if cfg.network == "plain":
            self.net: nn.Module = PlainUNet(self.n_contrasts, cfg.features, cfg.group_size)
        else:
            self.net = W2QNet(N_PROTOCOL_FEATURES[cfg.protocol_version], self.n_contrasts, cfg.features, cfg.embed_dim, cfg.group_size,
                              n_iterations=max(1, cfg.n_iterations), refine=cfg.n_iterations > 1)
        raw = inverse_softplus(cfg.lambda_init, cfg.softplus_beta)
        self.raw_lambda = nn.Parameter(torch.full((max(cfg.n_iterations, 1), 3), raw))

    def lambdas(self) -> torch.Tensor:
        """``(K, 3)`` positive prior weights of (PD, ln T1, ln T2) per iteration."""
        return F.softplus(self.raw_lambda, beta=self.config.softplus_beta)

    def network_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def lambda_parameters(self) -> list[nn.Parameter]:
        return [self.raw_lambda]

    def _validate(self, images: torch.Tensor, seq: torch.Tensor, types: torch.Tensor, mask: torch.Tensor,
                  available: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4 \
                or images.shape[1] != self.n_contrasts:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a real tensor (B, {self.n_contrasts}, Y, X) ({', '.join(CONTRASTS)}); got {got}")
        b, t, ny, nx = images.shape
        check_protocol(seq, types)
        if seq.shape[:2] != (b, t):
            raise ValueError(f"sequence_params must have shape (B, T, 6) = {(b, t, 6)}; got {tuple(seq.shape)}")
        if not bool(torch.isfinite(seq).all()):
            raise ValueError("sequence_params must be finite; got NaN or inf")
        if not isinstance(mask, torch.Tensor) or mask.shape != (b, ny, nx):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"brain_mask must have shape (B, Y, X) = {(b, ny, nx)}; got {got}")
        empty = ~mask.to(torch.bool).flatten(1).any(1)
        if bool(empty.any()):
            raise ValueError(f"brain_mask is empty (no brain pixel) in samples {torch.nonzero(empty).flatten().tolist()}")
        if available is None:
            available = torch.ones(b, t, dtype=torch.bool, device=images.device)
        if available.shape != (b, t) or available.dtype != torch.bool:
            raise ValueError(f"available must be a bool tensor (B, T) = {(b, t)}; got {available.dtype} {tuple(available.shape)}")
        if not bool(available.any(1).all()):
            raise ValueError("every sample needs at least one available contrast")
        bad = ~torch.isfinite(images) & available[..., None, None]
        if bool(bad.any()):
            raise ValueError(f"images hold {int(bad.sum())} NaN or inf values in available contrasts; "
                             "mask or replace them before mapping")
        inside = (images.abs() * mask.to(torch.bool)[:, None]).flatten(2).amax(-1)  # (B, T)
        zero = (inside == 0) & available
        if bool(zero.any()):
            b_i, c_i = (int(v) for v in torch.nonzero(zero)[0])
            raise ValueError(f"images: contrast {CONTRASTS[c_i] if c_i < len(CONTRASTS) else c_i} of sample {b_i} is "
                             "zero everywhere in the brain mask; mark it unavailable (available=) or give the image")
        return available

    def forward(
        self,
        images: torch.Tensor,
        sequence_params: torch.Tensor,
        sequence_types: torch.Tensor,
        brain_mask: torch.Tensor,
        available: torch.Tensor | None = None,
        n_iterations: int | None = None,
        intensity_scale: torch.Tensor | None = None,
    ) -> W2QOutput:
        """Maps from weighted images.

        Parameters
        ----------
        images
            ``(B, 3, Y, X)`` real magnitude images (T1w, T2w, FLAIR), any global scale per contrast;
            unavailable contrasts may hold anything (zeros).
        sequence_params
            ``(B, 3, 6)``: TR [s], TE [s], TI [s] (0 if none), flip angle [deg], MP-RAGE readout
            spacing τ [s] and readouts per inversion N (0 otherwise); ``(B, 3, 4)`` without MP-RAGE.
        sequence_types
            ``(B, 3)`` integer ids into ``SEQUENCE_TYPES`` = (spin_echo, spoiled_gre, flair, mprage).
        brain_mask
            ``(B, Y, X)`` bool.
        available
            ``(B, 3)`` bool, default all True.
        n_iterations
            Run only this many of the K iterations (0: the network alone, as in pretraining).
        intensity_scale
            ``(B, 3)`` known global intensity of each contrast (image = scale · q(PD, T1, T2)), e.g.
            from a calibrated scanner; the fits then use it instead of the closed-form scale (a model
            with ``field_degree`` > 0 still fits the relative smooth field). Default None: unknown.

        Returns
        -------
        :class:`W2QOutput`; ``.final`` is ``(B, 3, Y, X)`` (PD, T1 [s], T2 [s]).
        """
        available = self._validate(images, sequence_params, sequence_types, brain_mask, available)
        cfg = self.config
        n_iter = cfg.n_iterations if n_iterations is None else int(n_iterations)
        if not 0 <= n_iter <= cfg.n_iterations:
            raise ValueError(f"n_iterations must be in [0, {cfg.n_iterations}]; got {n_iterations}")
        dtype = self.raw_lambda.dtype
        ny, nx = images.shape[-2:]
        multiple = self.net.multiple
        pad = (0, -nx % multiple, 0, -ny % multiple)
        images = F.pad(torch.where(available[..., None, None], images.to(dtype), 0.0), pad)
        mask = F.pad(brain_mask.to(torch.bool), pad)
        seq = sequence_params.to(dtype)
        signal = MultiContrastSignal(seq, sequence_types)
        normalised, factors = normalise_images(images, mask, cfg.percentile)
        if intensity_scale is not None:
            intensity_scale = _relative_scale(intensity_scale, factors)
        shown = normalised * available[..., None, None]
        fused = None
        if cfg.network == "plain":
            p_reg = self.net(shown, mask, available)
        else:
            fused = self.net.encode(shown, mask, available, protocol_features(seq, sequence_types, signal, cfg.protocol_version))
            p_reg = self.net.decode(fused, 0, None, None)
        reference = white_matter_reference(normalised, p_reg.detach(), mask, signal, cfg.wm_fraction)
        weight = available[..., None, None].to(dtype) * mask[:, None].to(dtype)
        networks, fits, scales, fields = [p_reg], [], [], []
        lambdas = self.lambdas()
        for k in range(n_iter):
            if intensity_scale is None:
                scale, field = self._intensity(signal(p_reg), normalised, mask, reference)
            else:  # the global level is known; a model with a smooth field still fits the relative field
                scale = intensity_scale
                field = fit_smooth_field(scale[..., None, None] * signal(p_reg), normalised, mask, cfg.field_degree)
            factor = scale[..., None, None] * field
            p_fit = self._fit(signal, normalised, factor, weight, p_reg, lambdas[k])
            fits.append(p_fit)
            scales.append(scale)
            fields.append(field)
            if k + 1 < n_iter:
                residual = weight * (normalised / factor - signal(p_fit))
                state = self.net.fit_state(p_fit, residual, mask)  # type: ignore[union-attr]
                p_reg = self.net.decode(fused, k + 1, state, p_fit)  # type: ignore[union-attr]
                networks.append(p_reg)

        def crop(x: torch.Tensor) -> torch.Tensor:
            return x[..., :ny, :nx]

        return W2QOutput(
            fits=[crop(f) for f in fits], network=[crop(n) for n in networks], scales=scales,
            fields=[crop(f) for f in fields], reference=reference,
            normalised=crop(normalised), factors=factors, available=available, brain_mask=crop(mask), signal=signal,
        )

    @torch.no_grad()
    def refit(
        self,
        images: torch.Tensor,
        sequence_params: torch.Tensor,
        sequence_types: torch.Tensor,
        brain_mask: torch.Tensor,
        p_reg: torch.Tensor,
        available: torch.Tensor | None = None,
        return_std: bool = False,
        intensity_scale: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One fit layer (last λ) around given maps, at the images' own resolution.

        Used by ``pinqi map`` after running W2Q on slices resampled to the training grid: the
        up-sampled maps ``p_reg`` ``(B, 3, Y, X)`` are the prior, the native images the data, so
        the written maps are consistent with the native inputs. Returns ``(B, 3, Y, X)``, and with
        ``return_std`` also their per-pixel standard deviations ``(B, 3, Y, X)`` (PD, T1 [s], T2 [s])
        from the curvature of the fit objective (:func:`pinqi.w2q.uncertainty.fit_uncertainty`).
        ``intensity_scale`` ``(B, T)``: known scales in the images' units, as in :meth:`forward`.
        """
        available = self._validate(images, sequence_params, sequence_types, brain_mask, available)
        cfg, dtype = self.config, self.raw_lambda.dtype
        images = torch.where(available[..., None, None], images.to(dtype), 0.0)
        mask, p_reg = brain_mask.to(torch.bool), p_reg.to(dtype)
        signal = MultiContrastSignal(sequence_params.to(dtype), sequence_types)
        normalised, factors = normalise_images(images, mask, cfg.percentile)
        if intensity_scale is None:
            reference = white_matter_reference(normalised, p_reg, mask, signal, cfg.wm_fraction)
            scale, field = self._intensity(signal(p_reg), normalised, mask, reference)
        else:
            scale = _relative_scale(intensity_scale, factors)
            field = fit_smooth_field(scale[..., None, None] * signal(p_reg), normalised, mask, cfg.field_degree)
        weight = available[..., None, None].to(dtype) * mask[:, None].to(dtype)
        return self._fit(signal, normalised, scale[..., None, None] * field, weight, p_reg, self.lambdas()[-1],
                         return_std=return_std)

    def _intensity(self, q: torch.Tensor, normalised: torch.Tensor, mask: torch.Tensor,
                   reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounded closed-form global scale ``(B, T)`` and relative smooth field ``(B, T, Y, X)``."""
        cfg = self.config
        scale = fit_scale(q, normalised, mask, reference, cfg.scale_bound)
        return scale, fit_smooth_field(scale[..., None, None] * q, normalised, mask, cfg.field_degree)

    def _fit(self, signal: MultiContrastSignal, normalised: torch.Tensor, factor: torch.Tensor, weight: torch.Tensor,
             p_reg: torch.Tensor, lam: torch.Tensor, return_std: bool = False) -> Any:
        """One fit layer: weighted data term of the available contrasts in the brain, prior on ``u(p)``;
        ``factor`` ``(B, T, Y, X)`` is the intensity (scale × field) dividing the images. Returns the
        maps, and with ``return_std`` also their standard deviations (:mod:`pinqi.w2q.uncertainty`)."""
        cfg = self.config
        y = weight * normalised / factor

        def model(u: torch.Tensor) -> torch.Tensor:
            return weight * signal(from_log_maps(u))

        u = nonlinear_fit(model, y, to_log_maps(p_reg), lam.view(1, 3, 1, 1), bounds=LOG_BOUNDS, solver=cfg.fit_solver,
                          max_iter=cfg.fit_max_iter, tol=cfg.fit_tol)
        if return_std:
            return from_log_maps(u), fit_uncertainty(model, y, u, lam, weight)
        return from_log_maps(u)

    def synthesise(self, output: W2QOutput, p: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-synthesised normalised images of all contrasts and their scales.

        The scale (and field) of every contrast, available or not, is the bounded closed-form fit of
        ``q_c(p)`` to ``ỹ_c`` around the reference. Returns ``(images (B, T, Y, X), scales (B, T))``.
        """
        p = output.final if p is None else p
        q = output.signal(p)
        scale, field = self._intensity(q, output.normalised, output.brain_mask, output.reference)
        return scale[..., None, None] * field * q, scale
