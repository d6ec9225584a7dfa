"""Model-based fit of the parameter maps to the k-space, stopped at the noise level.

PINQI's unrolled iterations are a fixed number of alternations between data consistency in the
image domain and a pixel-wise fit. On data far from its training distribution (the nine-tube
phantom at 64² and 8x) the result can still be several times the noise level away from the
measured k-space. This module fits the maps to the k-space directly,

    ``min_p ||A q(p) − k||²``,   p = (Re M0, Im M0, ln R1) per pixel,

with ``A`` the multi-coil sampling operator and ``q`` the signal model, by L-BFGS from given maps,
and stops by Morozov's discrepancy principle: as soon as the misfit reaches the energy the noise
itself has, ``2 σ² × (number of sampled k-space values)`` (σ: the noise standard deviation of the
real and of the imaginary part), times :data:`DISCREPANCY_TAU`, or when the misfit stalls above
it (:data:`STALL_WINDOW`, :data:`STALL_DECREASE`: what is left is model error). Fitting further would fit the noise: unstopped, the same fit
takes brain maps from T1 nRMSE 0.15 to 1.2 (``benchmarks/results/real_data.md``, notes). Maps
already at the noise level are returned unchanged.

``pinqi reconstruct`` applies it after the automatic prior strength (:mod:`pinqi.prior_strength`)
whenever the noise level is known, i.e. the raw data were prewhitened with their noise scans
(unit noise variance per complex sample, σ = 1/√2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["DISCREPANCY_TAU", "STALL_WINDOW", "STALL_DECREASE", "noise_energy", "model_based_fit"]

#: The fit stops at this multiple of the expected noise energy (Morozov's τ > 1): the noise level of
#: prewhitened data is itself an estimate (a noise covariance from a few hundred samples per coil;
#: the whitened noise of the example files measures 1.04–1.05 instead of 1).
DISCREPANCY_TAU: float = 1.05
#: The fit also stops when the misfit has fallen by less than :data:`STALL_DECREASE` (relative) over
#: the last :data:`STALL_WINDOW` iterations: the noise level is out of reach (model error in the coil
#: maps or the signal model), and further iterations would only fit the noise.
STALL_WINDOW: int = 5
STALL_DECREASE: float = 0.01


def noise_energy(mask: torch.Tensor, n_coils: int, noise_sigma: float) -> float:
    """Expected ``||noise||²`` over the sampled values: ``2 σ² × n_coils × sampled (t, y, x)``.

    Parameters
    ----------
    mask
        ``(B, T, Y, X)`` sampling mask (one sample, ``B = 1``, or the energy of all together).
    n_coils
        Receive coils ``C``.
    noise_sigma
        σ of the real and of the imaginary part of each k-space value (prewhitened data: 1/√2).
    """
    if not noise_sigma > 0:
        raise ValueError(f"noise_sigma must be > 0; got {noise_sigma}")
    return 2.0 * noise_sigma**2 * n_coils * float(mask.to(torch.bool).sum())


def model_based_fit(
    kspace: torch.Tensor,
    operator: Callable[[torch.Tensor], torch.Tensor],
    signal_model: torch.nn.Module,
    start: torch.Tensor,
    noise_sigma: float | None,
    mask: torch.Tensor,
    max_iter: int = 300,
) -> tuple[torch.Tensor, int]:
    """Maps fitted to ``kspace`` from ``start``, stopped at the noise level (module docstring).

    Parameters
    ----------
    kspace
        ``(1, T, C, Y, X)`` complex, zeros where not sampled.
    operator
        ``A``: images ``(1, T, Y, X)`` to k-space ``(1, T, C, Y, X)`` (e.g. :meth:`PINQI.operator`).
    signal_model
        ``q``: maps ``(1, 3, Y, X)`` (Re M0, Im M0, R1 [1/s]) to images ``(1, T, Y, X)``.
    start
        ``(1, 3, Y, X)`` maps to start from (R1 is clamped to at least 0.01 /s).
    noise_sigma
        σ of the real and of the imaginary part of the noise, in the units of ``kspace``; None: no
        stopping rule, all ``max_iter`` iterations (for studies: it fits the noise).
    mask
        ``(1, T, Y, X)`` the sampling mask (for the noise energy).
    max_iter
        Most L-BFGS iterations.

    Returns
    -------
    ``(maps (1, 3, Y, X), iterations)``: ``start`` itself (0 iterations) when its misfit is already
    at the noise level (τ × :func:`noise_energy`).
    """
    if kspace.ndim != 5 or start.ndim != 4 or start.shape[1] != 3:
        raise ValueError(f"kspace must be (1, T, C, Y, X) and start (1, 3, Y, X); got {tuple(kspace.shape)} and "
                         f"{tuple(start.shape)}")
    given, start = start, start.detach()  # the fit is not differentiated (pinqi reconstruct runs without gradients)
    # the misfit in units of the stopping point (with no noise level: of the starting misfit, never reached)
    target = DISCREPANCY_TAU * noise_energy(mask, kspace.shape[2], noise_sigma) if noise_sigma is not None else None
    # unknowns (Re M0 / c, Im M0 / c, ln R1), c the RMS |M0| of the start: any scale and phase of the
    # data give the same iterations (L-BFGS is invariant to the global phase, a rotation of (Re, Im))
    c = start[:, :2].square().sum(1).mean().sqrt().clamp_min(torch.finfo(start.dtype).tiny)
    x = torch.stack([start[:, 0] / c, start[:, 1] / c, start[:, 2].clamp_min(1e-2).log()], 1)

    def maps(u: torch.Tensor) -> torch.Tensor:
        return torch.stack([u[:, 0] * c, u[:, 1] * c, u[:, 2].exp()], 1)

    def energy(u: torch.Tensor) -> torch.Tensor:
        return (operator(signal_model(maps(u)).to(kspace.dtype)) - kspace).abs().square().sum()

    with torch.no_grad():
        first = float(energy(x))
    unit, stop = (target, 1.0) if target is not None else (max(first, 1e-30), -1.0)

    def misfit(u: torch.Tensor) -> torch.Tensor:  # in units of the stopping point (scaled for L-BFGS)
        return energy(u) / unit

    if first / unit <= stop:
        return given, 0
    x = x.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([x], max_iter=1, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = misfit(x)
        loss.backward()
        return loss

    done, history = 0, [first / unit]
    with torch.enable_grad():
        for done in range(1, max_iter + 1):
            optimiser.step(closure)
            with torch.no_grad():
                history.append(float(misfit(x)))
            if history[-1] <= stop:
                break
            if target is not None and len(history) > STALL_WINDOW and \
                    history[-1] > (1 - STALL_DECREASE) * history[-1 - STALL_WINDOW]:
                break  # what is left is model error (coil maps, signal model), not noise: more would fit the noise
    return maps(x.detach()), done
