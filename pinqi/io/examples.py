"""Example raw files: a simulated brain slice or the nine-tube phantom, written as ISMRMRD.

What ``pinqi simulate --format ismrmrd``, ``make demo`` and ``benchmarks.real_data`` feed to
``pinqi reconstruct``. The scan is made the way a scanner would deliver it, not the way the
training data are: coil noise correlated between channels (a random covariance) with its
noise-only scans in the file, twofold readout oversampling, calibration (ACS) lines in the
longest-delay acquisition, an arbitrary intensity unit and phase, and no coil maps in the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from operators import MultiCoilCartesianOp, simulate_coil_maps, variable_density_mask, with_calibration_lines
from simulation import SaturationRecovery, T1MappingDataset
from simulation.tube_phantom import tube_phantom

from .ismrmrd_writer import write_ismrmrd

__all__ = ["ExampleScan", "write_example_scan", "DEFAULT_SCALE"]

#: The example files' intensity unit: k-space is multiplied by this (arbitrary units and phase).
DEFAULT_SCALE: complex = 1e3 * complex(math.cos(0.7), math.sin(0.7))


@dataclass(frozen=True)
class ExampleScan:
    """A written example file and its ground truth.

    Attributes
    ----------
    path
        The ISMRMRD file.
    params
        ``(3, Y, X)`` true (Re M0, Im M0, R1 [1/s]) in the units of the file's k-space.
    mask
        ``(Y, X)`` bool: where the truth is scored (the brain, or the phantom's bath and tubes).
    rois
        ``(9, Y, X)`` bool tube regions (phantom) or None (brain).
    csm
        ``(C, Y, X)`` the coil maps the data were simulated with (not in the file).
    """

    path: Path
    params: torch.Tensor
    mask: torch.Tensor
    rois: torch.Tensor | None
    csm: torch.Tensor


def _mixing(n_coils: int, g: torch.Generator) -> torch.Tensor:
    """Lower-triangular ``(C, C)``: coil noise ``L n`` has the covariance ``L Lᴴ``."""
    low = torch.tril(torch.randn(n_coils, n_coils, dtype=torch.complex64, generator=g), -1)
    return (torch.eye(n_coils, dtype=torch.complex64) + 0.3 * low) * (1 + 0.5 * torch.rand(n_coils, generator=g))[:, None]


def _truth(kind: str, size: int, times: tuple[float, ...], g: torch.Generator, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if kind == "phantom":
        ph = tube_phantom(size, generator=g)
        return ph.params, ph.object_mask, ph.rois
    sample = T1MappingDataset(source="mni152", split="test", length=1, seed=seed, image_size=size, n_coils=1,
                              times=times, acceleration=1, noise_sigma=0.0)[0]
    return sample["params"], sample["brain_mask"], None


def write_example_scan(
    path: str | Path,
    kind: Literal["brain", "phantom"] = "phantom",
    *,
    size: int = 64,
    n_coils: int = 8,
    times: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 8.0),
    acceleration: float = 8.0,
    calibration_lines: int = 16,
    noise_sigma: float = 0.005,
    scale: complex = DEFAULT_SCALE,
    seed: int = 0,
) -> ExampleScan:
    """Simulate one slice and write it as an ISMRMRD file.

    Parameters
    ----------
    path
        The file to write (its folder must exist).
    kind
        ``"brain"`` (an MNI152 test slice with random tissue values) or ``"phantom"``
        (:func:`simulation.tube_phantom.tube_phantom`).
    size, n_coils, times, acceleration
        Matrix ``size²``, receive coils, saturation times [s], acceleration of the imaging lines
        (1: fully sampled).
    calibration_lines
        Fully sampled centre lines added to the longest-delay acquisition.
    noise_sigma
        Noise standard deviation per coil before mixing, relative to M0 ~ 1.
    scale
        Global complex factor on the k-space (the file's intensity unit).
    seed
        Seeds everything.
    """
    if kind not in ("brain", "phantom"):
        raise ValueError(f"kind must be 'brain' or 'phantom'; got {kind!r}")
    g = torch.Generator().manual_seed(seed)
    params, object_mask, rois = _truth(kind, size, tuple(times), g, seed)
    csm = simulate_coil_maps(n_coils, (size, size), object_mask=object_mask, generator=g)
    t = torch.tensor(times, dtype=torch.float32)
    if acceleration == 1:
        mask = torch.ones(t.numel(), size, size, dtype=torch.bool)
    else:
        mask = variable_density_mask(t.numel(), (size, size), acceleration=acceleration, generator=g).bool()
        mask = with_calibration_lines(mask, int(t.argmax()), min(calibration_lines, size))
    k = MultiCoilCartesianOp(csm[None], mask[None])(SaturationRecovery(t)(params[None]))[0]
    mix = _mixing(n_coils, g)
    noise = torch.einsum("cd,tdyx->tcyx", mix, torch.randn(k.shape, dtype=k.dtype, generator=g)) * noise_sigma
    k = (k + noise * mask[:, None]) * scale
    scans = (mix @ torch.randn(n_coils, 4 * size, dtype=k.dtype, generator=g)) * noise_sigma * scale
    written = write_ismrmrd(path, k, mask, t, noise=scans, oversampling=2)
    m0 = torch.complex(params[0], params[1]) * scale
    truth = torch.stack([m0.real, m0.imag, params[2]])
    return ExampleScan(path=written, params=truth, mask=object_mask, rois=rois, csm=csm)
