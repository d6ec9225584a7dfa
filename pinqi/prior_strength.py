"""How much to trust PINQI's learned priors on measured data: a discrepancy rule per slice.

The learned priors (Y_θ, P_θ with their weights λ_y, λ_p) were trained on simulated brains. On
data unlike that (phantoms, lesions, other resolutions) they can pull the maps away from what the
measurements say: on the nine-tube phantom the shipped model's T1 is 45 ms off at 192²/8x with its
priors and 11 ms off without them (``benchmarks/results/real_data.md``). A physics-only
reconstruction, the same unrolled model run with ``prior_strength=0`` (data consistency and the
pixel-wise fit alternate with the learned λ_q; P_θ only gives the starting point), never
contradicts the data that way.

The rule, in the spirit of Morozov's discrepancy principle but relative, so that it needs no
noise estimate: reconstruct with the priors off and note the data misfit
``r₀ = ||A q(p₀) − k||²`` (A the multi-coil sampling operator, q the signal model). Then try the
strengths :data:`AUTO_STRENGTHS` from the largest, and keep the first whose misfit is at most
:data:`AUTO_TOLERANCE` · r₀; if none is, keep the physics-only maps.

:data:`AUTO_TOLERANCE` = 1.15 comes from the training distribution, not from any test: on the 16
validation samples of the shipped model (MNI152 brains with inserts, wide T1s, scales and phases,
8x, estimated coil maps) the full priors raise the misfit by 2–12 % on 12 samples and by 39 % to
4.2x on the other 4. The tolerance lets the priors act wherever they stay as close to the data as
they do on most training-like data. It costs two to four forward passes per slice.

With a known noise level (``noise_sigma``; ``pinqi reconstruct`` knows it for prewhitened data) the
chosen maps are then fitted to the k-space until their misfit reaches that level
(:mod:`pinqi.model_based`): the absolute discrepancy principle, after the relative one. When the
priors were not kept at full strength the fit starts from the physics-only maps, which they did not
pull.
"""

from __future__ import annotations

from typing import Literal

import torch

from .model import PINQI
from .model_based import model_based_fit

__all__ = ["AUTO_STRENGTHS", "AUTO_TOLERANCE", "PriorStrength", "data_misfit", "reconstruct_slice"]

#: Prior strengths tried by the rule, largest first (0 is the fallback).
AUTO_STRENGTHS: tuple[float, ...] = (1.0, 0.5, 0.25)
#: Largest accepted ratio of a strength's data misfit to the physics-only one.
AUTO_TOLERANCE: float = 1.15
PriorStrength = float | Literal["auto"]


def data_misfit(
    model: PINQI, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor, signal_model: torch.nn.Module,
    params: torch.Tensor,
) -> torch.Tensor:
    """``||A q(p) − k||²`` per sample, ``(B,)``: how far the maps' signal is from the measured k-space.

    Parameters
    ----------
    model
        Supplies the forward operator ``A`` (:meth:`PINQI.operator`).
    kspace
        ``(B, T, C, Y, X)`` complex, zeros where not sampled.
    csm, mask
        ``(B, C, Y, X)`` coil maps and the ``(B, T, Y, X)`` sampling mask.
    signal_model
        ``q``: parameters ``(B, P, Y, X)`` to images ``(B, T, Y, X)``.
    params
        ``(B, P, Y, X)`` in the units of ``kspace`` (as :attr:`PINQIOutput.final`).
    """
    predicted = model.operator(csm, mask)(signal_model(params).to(kspace.dtype))
    return (predicted - kspace).abs().square().flatten(1).sum(1)


def reconstruct_slice(
    model: PINQI, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor, signal_model: torch.nn.Module,
    prior_strength: PriorStrength = "auto", noise_sigma: float | None = None,
) -> tuple[torch.Tensor, float]:
    """PINQI maps of one slice and the prior strength they were made with.

    Parameters
    ----------
    model, kspace, csm, mask, signal_model
        As :meth:`PINQI.forward`, for one sample (``B = 1``).
    prior_strength
        A number (:meth:`PINQI.forward`), or ``"auto"``: the discrepancy rule of the module
        docstring.
    noise_sigma
        With ``"auto"`` and a known noise level (σ of the real and of the imaginary part, units of
        ``kspace``): the maps are then fitted to the k-space until their misfit reaches the noise
        level (:func:`pinqi.model_based.model_based_fit`), from the chosen maps when the priors were
        kept at full strength, else from the physics-only maps. None (default): no such fit.

    Returns
    -------
    ``(params, strength)``: ``(1, P, Y, X)`` maps and the strength used.
    """
    if kspace.shape[0] != 1:
        raise ValueError(f"reconstruct_slice takes one slice (B = 1); got B = {kspace.shape[0]}")

    def run(strength: float) -> torch.Tensor:
        return model(kspace, csm, mask, signal_model=signal_model, prior_strength=strength).final

    if prior_strength != "auto":
        if isinstance(prior_strength, str):
            raise ValueError(f"prior_strength must be a number >= 0 or 'auto'; got {prior_strength!r}")
        return run(float(prior_strength)), float(prior_strength)
    physics = run(0.0)
    limit = AUTO_TOLERANCE * data_misfit(model, kspace, csm, mask, signal_model, physics)
    params, chosen = physics, 0.0
    for strength in AUTO_STRENGTHS:
        candidate = run(strength)
        if bool((data_misfit(model, kspace, csm, mask, signal_model, candidate) <= limit).all()):
            params, chosen = candidate, strength
            break
    if noise_sigma is not None:
        # priors below full strength were at odds with the data: fit from the maps that are not pulled by them
        start = params if chosen == AUTO_STRENGTHS[0] else physics
        params = model_based_fit(kspace, model.operator(csm, mask), signal_model, start, noise_sigma, mask)[0]
    return params, chosen
