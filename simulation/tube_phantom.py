"""A numerical T1 phantom: nine tubes in a water bath, with the PINQI paper's Table I T1s.

The PINQI paper validates on a physical phantom of nine tubes whose reference T1s (fully sampled,
18 saturation delays) are 0.28, 0.38, 0.39, 0.45, 0.59, 0.60, 1.15, 1.42 and 1.76 s. This module
draws a numerical stand-in that the project's own brain simulation did not make: a round bath,
nine round tubes on a 3 × 3 grid, each with its own T1 and proton density, a smooth M0 phase,
and a label map whose eroded tube regions serve as regions of interest (as ROIs on a real scan
stay clear of the tube walls).

Geometry (in units of the field of view, centre at pixel ``N // 2`` as everywhere in the project):
bath radius 0.44; tubes of radius 0.075 at offsets (−0.24, 0, 0.24) in y and x; ROIs keep the
pixels within 0.7 tube radii of a tube's centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["TABLE_I_T1", "TubePhantom", "tube_phantom"]

#: Reference T1 [s] of the nine tubes of the PINQI paper's physical phantom (Table I).
TABLE_I_T1: tuple[float, ...] = (0.28, 0.38, 0.39, 0.45, 0.59, 0.60, 1.15, 1.42, 1.76)

_BATH_RADIUS = 0.44
_TUBE_RADIUS = 0.075
_TUBE_OFFSETS = (-0.24, 0.0, 0.24)
_ROI_FRACTION = 0.7


@dataclass(frozen=True)
class TubePhantom:
    """A drawn phantom.

    Attributes
    ----------
    params
        ``(3, Y, X)`` real: (Re M0, Im M0, R1 [1/s]); zero M0 and R1 = 1 /s outside the bath.
    labels
        ``(Y, X)`` long: 0 outside, 1–9 the tubes, 10 the bath.
    rois
        ``(9, Y, X)`` bool: the eroded region of each tube.
    t1
        ``(9,)`` the tubes' T1 [s].
    """

    params: torch.Tensor
    labels: torch.Tensor
    rois: torch.Tensor
    t1: torch.Tensor

    @property
    def object_mask(self) -> torch.Tensor:
        """``(Y, X)`` bool: inside the bath (tubes included)."""
        return self.labels > 0


def tube_phantom(
    shape: int | Sequence[int] = 64,
    t1: Sequence[float] = TABLE_I_T1,
    *,
    bath_t1: float = 2.0,
    pd: float = 0.9,
    bath_pd: float = 1.0,
    phase_max: float = math.pi,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> TubePhantom:
    """Draw the nine-tube phantom.

    Parameters
    ----------
    shape
        ``N`` or ``(Y, X)``; at least 24 pixels a side (a tube must span a few pixels).
    t1
        Nine tube T1s [s], default :data:`TABLE_I_T1`.
    bath_t1, pd, bath_pd
        T1 [s] of the water bath, proton density of the tubes and of the bath.
    phase_max
        The M0 phase is a random plane ``a + b·y + c·x`` with ``|a| <= phase_max`` and a tilt of at
        most ``phase_max / 2`` across the field of view; 0 gives a real, positive M0.
    generator
        Draws the phase (the geometry is fixed).
    dtype
        Real dtype of ``params``.

    Returns
    -------
    :class:`TubePhantom`.
    """
    ny, nx = (int(shape), int(shape)) if isinstance(shape, int) else (int(shape[0]), int(shape[1]))
    if min(ny, nx) < 24:
        raise ValueError(f"shape must be at least 24 pixels a side; got ({ny}, {nx})")
    values = [float(v) for v in t1]
    if len(values) != 9 or not all(0 < v < 100 for v in values):
        raise ValueError(f"t1 must be nine positive times in seconds; got {list(t1)!r}")
    if not 0 < float(bath_t1) < 100:
        raise ValueError(f"bath_t1 must be a positive time in seconds; got {bath_t1!r}")
    y = (torch.arange(ny, dtype=torch.float64) - ny // 2) / ny
    x = (torch.arange(nx, dtype=torch.float64) - nx // 2) / nx
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    labels = torch.where(yy**2 + xx**2 <= _BATH_RADIUS**2, 10, 0)
    r1 = torch.where(labels > 0, 1.0 / bath_t1, 1.0).to(torch.float64)
    magnitude = torch.where(labels > 0, bath_pd, 0.0).to(torch.float64)
    rois = []
    for index, (cy, cx) in enumerate((cy, cx) for cy in _TUBE_OFFSETS for cx in _TUBE_OFFSETS):
        distance = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        tube = distance <= _TUBE_RADIUS
        labels = torch.where(tube, index + 1, labels)
        r1 = torch.where(tube, 1.0 / values[index], r1)
        magnitude = torch.where(tube, pd, magnitude)
        rois.append(distance <= _ROI_FRACTION * _TUBE_RADIUS)
    coefficients = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1) * phase_max
    phase = coefficients[0] + 0.5 * (coefficients[1] * yy + coefficients[2] * xx)
    m0 = torch.polar(magnitude, phase)
    params = torch.stack([m0.real, m0.imag, r1]).to(dtype)
    return TubePhantom(params=params, labels=labels, rois=torch.stack(rois), t1=torch.tensor(values, dtype=dtype))
