"""T1 maps from measured raw data: coil maps from the data, then PINQI or CG-SENSE + fit, per slice.

This is what ``pinqi reconstruct`` runs, as a library call:

>>> from pinqi.io import read_raw
>>> from pinqi.reconstruction import reconstruct
>>> result = reconstruct(read_raw("scan.h5"))        # the shipped PINQI model   # doctest: +SKIP
>>> result.t1.shape                                   # (slices, Y, X) seconds   # doctest: +SKIP

Coil maps are estimated as the PINQI paper does, from the fully sampled centre lines of the
longest-delay acquisition (it has the most signal), unless the file carries maps or the caller
passes them. Nothing needs normalising: PINQI and the classical pipeline are equivariant to the
k-space's intensity scale, and M0 comes back in the units of the data. The slices run under
:func:`pinqi.common.threads.inference_threads`, which uses only the cores that are idle, so a busy
machine cannot make more threads slower than one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from operators import estimate_coil_maps
from simulation import SaturationRecovery

from .baselines.classical import cg_sense_fit
from .common.threads import inference_threads
from .io.types import RawT1Data
from .model import PINQI
from .prior_strength import PriorStrength, reconstruct_slice

__all__ = ["CoilMethod", "T1Reconstruction", "centre_lines", "coil_maps_from_data", "check_times_match", "reconstruct"]

CoilMethod = Literal["walsh", "inati", "espirit"]
TIME_TOLERANCE_S = 1e-3
"""Saturation times that differ by less than this [s] count as the same."""


@dataclass(frozen=True)
class T1Reconstruction:
    """Maps of every slice.

    Attributes
    ----------
    m0
        ``(S, Y, X)`` complex64, in the units of the k-space.
    r1
        ``(S, Y, X)`` float32 [1/s].
    csm
        ``(S, C, Y, X)`` the coil maps used (``Σ_c |c|² = 1`` where there is signal, 0 elsewhere).
    method
        ``"PINQI"`` or ``"CG-SENSE + fit"``.
    times
        ``(T,)`` saturation times [s].
    header
        The raw file's header.
    """

    m0: torch.Tensor
    r1: torch.Tensor
    csm: torch.Tensor
    method: str
    times: torch.Tensor
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def t1(self) -> torch.Tensor:
        """``(S, Y, X)`` T1 = 1/R1 [s]; 0 where R1 <= 0 (no recovery was measured)."""
        return torch.where(self.r1 > 0, 1.0 / self.r1.clamp_min(1e-6), torch.zeros_like(self.r1))

    @property
    def object_mask(self) -> torch.Tensor:
        """``(S, Y, X)`` bool: where the coil maps see signal and ``|M0|`` exceeds 10 % of its 99th percentile."""
        magnitude = self.m0.abs()
        level = torch.quantile(magnitude.flatten(1).double(), 0.99, dim=1).to(magnitude.dtype)
        return (self.csm.abs().square().sum(1) > 0.5) & (magnitude > 0.1 * level[:, None, None])


ESPIRIT_MIN_LINES = 6
"""ESPIRiT's calibration kernel spans 6 lines; with fewer centre lines Walsh is used."""


def centre_lines(mask: torch.Tensor) -> int:
    """Number of consecutive lines around ``Y // 2`` sampled in every slice of ``mask`` ``(S, Y, X)``."""
    lines = mask.any(-1).all(0)
    centre = lines.shape[0] // 2
    if not bool(lines[centre]):
        return 0
    below = lines[:centre].flip(0).int().cumprod(0).sum()
    above = lines[centre:].int().cumprod(0).sum()
    return int(below + above)


def coil_maps_from_data(
    kspace: torch.Tensor, mask: torch.Tensor, times: torch.Tensor, method: CoilMethod = "espirit"
) -> tuple[torch.Tensor, str]:
    """Coil maps ``(S, C, Y, X)`` from the centre lines of the longest-delay acquisition.

    Parameters
    ----------
    kspace
        ``(S, T, C, Y, X)`` complex, with fully sampled centre lines along ``Y``.
    mask
        ``(S, T, Y, X)`` sampling mask.
    times
        ``(T,)`` saturation times [s].
    method
        ``"espirit"``, ``"walsh"`` or ``"inati"`` (see :func:`operators.estimate_coil_maps`).
        ESPIRiT falls back to Walsh when the calibration region has fewer than
        :data:`ESPIRIT_MIN_LINES` lines.

    Returns
    -------
    The maps and the name of the estimator used.
    """
    if kspace.ndim != 5:
        raise ValueError(f"kspace must be (S, T, C, Y, X); got shape {tuple(kspace.shape)}")
    times = torch.as_tensor(times)
    if method == "espirit" and centre_lines(mask[:, int(times.argmax())]) < ESPIRIT_MIN_LINES:
        method = "walsh"
    maps = estimate_coil_maps(kspace, method, mask=mask, contrast="longest", times=times)
    return maps, method


def check_times_match(trained: torch.Tensor, measured: torch.Tensor) -> None:
    """Refuse data whose saturation times differ from the model's, naming both sets."""
    trained, measured = torch.as_tensor(trained).double(), torch.as_tensor(measured).double()
    same = trained.shape == measured.shape and bool(((trained - measured).abs() <= TIME_TOLERANCE_S).all())
    if not same:
        raise ValueError(
            f"the model was trained with saturation times {[round(v, 4) for v in trained.tolist()]} s; "
            f"the data have {[round(v, 4) for v in measured.tolist()]} s (train a model for these times, "
            "or use --baseline cg-sense)"
        )


def reconstruct(
    raw: RawT1Data,
    model: PINQI | None = None,
    *,
    baseline: Literal["cg-sense"] | None = None,
    coil_method: CoilMethod = "espirit",
    csm: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    prior_strength: PriorStrength = "auto",
) -> T1Reconstruction:
    """Reconstruct every slice of ``raw``.

    Parameters
    ----------
    raw
        The data (:func:`pinqi.io.read_raw`).
    model
        A trained PINQI; ``None`` with ``baseline=None`` loads the shipped model.
    baseline
        ``"cg-sense"``: Tikhonov CG-SENSE images, then a pixel-wise fit, instead of PINQI.
    coil_method
        Coil-map estimator when neither ``csm`` nor the file gives maps (:func:`coil_maps_from_data`;
        the one used is recorded as ``header["coil_maps"]``).
    csm
        ``(S, C, Y, X)`` coil maps to use instead of estimating them.
    progress
        Called as ``progress(done, total)`` after each slice.
    prior_strength
        ``"auto"`` (default): per slice, the largest of 1, 0.5, 0.25 whose maps fit the data almost
        as well as the physics-only ones, else 0 (:mod:`pinqi.prior_strength`); or a number, the
        factor on PINQI's learned-prior weights (1 as trained, 0 physics only). The strengths used
        are recorded as ``header["prior_strength"]``. Ignored by the baseline. With ``"auto"`` and
        prewhitened data (noise scans in the file: unit noise variance), the maps are then fitted
        to the k-space until their misfit reaches the noise level (:mod:`pinqi.model_based`;
        ``header["model_based_fit"]`` says whether it ran).

    Returns
    -------
    :class:`T1Reconstruction`.
    """
    if not isinstance(raw, RawT1Data):
        raise TypeError(f"raw must be a RawT1Data (from pinqi.io.read_raw); got {type(raw).__name__}")
    if baseline not in (None, "cg-sense"):
        raise ValueError(f"baseline must be None or 'cg-sense'; got {baseline!r}")
    if baseline is None and model is None:
        from .training import load_pinqi

        model = load_pinqi()
    if baseline is None:
        assert model is not None
        trained = getattr(model, "train_config", None)
        check_times_match(
            torch.tensor(trained.times) if trained is not None else model.signal_model.times, raw.times
        )
    maps = csm if csm is not None else raw.coil_maps
    header = dict(raw.header)
    if maps is None:
        maps, header["coil_maps"] = coil_maps_from_data(raw.kspace, raw.mask, raw.times, coil_method)
    else:
        header["coil_maps"] = "given" if csm is not None else "from the file"
    if tuple(maps.shape) != (raw.n_slices, raw.n_coils, *raw.kspace.shape[-2:]):
        raise ValueError(
            f"csm must have shape {(raw.n_slices, raw.n_coils, *raw.kspace.shape[-2:])}; got {tuple(maps.shape)}"
        )
    maps = maps.to(raw.kspace.dtype)
    q = SaturationRecovery(raw.times.float())
    # prewhitened data have unit noise variance per complex value: the model-based fit knows when to stop
    noise_sigma = math.sqrt(0.5) if bool(header.get("noise_prewhitened")) and prior_strength == "auto" else None
    if baseline is None:
        header["model_based_fit"] = ("run to the noise level of the prewhitened data (or until its misfit stalls)"
                                     if noise_sigma is not None else
                                     "not run: " + ("no noise scans, so the noise level is unknown"
                                                    if prior_strength == "auto" else "fixed prior strength"))
    m0, r1, strengths = [], [], []
    with torch.no_grad(), inference_threads():
        for s in range(raw.n_slices):
            k, c, m = raw.kspace[s : s + 1], maps[s : s + 1], raw.mask[s : s + 1]
            if baseline is None:
                assert model is not None
                params, strength = reconstruct_slice(model, k, c, m, q, prior_strength, noise_sigma)
                strengths.append(strength)
            else:
                params = cg_sense_fit(k, c, m, q, solver="gauss-newton").params
            m0.append(torch.complex(params[0, 0], params[0, 1]))
            r1.append(params[0, 2])
            if progress is not None:
                progress(s + 1, raw.n_slices)
    if baseline is None:
        header["prior_strength"] = strengths
    return T1Reconstruction(
        m0=torch.stack(m0).to(torch.complex64),
        r1=torch.stack(r1).float(),
        csm=maps,
        method="PINQI" if baseline is None else "CG-SENSE + fit",
        times=raw.times.clone(),
        header=header,
    )
