"""Random augmentation of synthetic parameter maps: geometry and smooth multiplicative fields.

Geometry
    A random flip (left-right and/or anterior-posterior), an in-plane rotation within
    ``±max_rotation_deg``, an isotropic zoom and a small shift, combined with the resampling of
    the anatomy grid to the target image size into ONE affine map, applied by a single
    ``F.affine_grid`` + ``F.grid_sample`` (bilinear, zeros outside) call on all channels at once.
    Without zoom the output field of view is the larger extent of the anatomy grid in millimetres
    (square pixels, whole slice visible); a zoom > 1 enlarges the object and crops its edges.

Smooth fields (see :func:`random_smooth_fields`)
    Random 2-D polynomials (monomials ``x^a y^b``, ``a + b <= degree``, on ``[-1, 1]²`` over the
    output grid) with normal coefficients, rescaled so that the largest absolute value over the
    image equals an amplitude drawn uniformly from ``[0, max]``. They give

    * the T1 factor ``1 + p`` with ``|p| <= t1_max_rel`` (default ±10 %),
    * the bias field ``exp(p)`` with ``|p| <= bias_max_log`` (default ±0.3, factor 0.74–1.35),
    * the phase ``φ = p`` with ``|φ| <= phase_max`` (default π), M0 gets ``e^{iφ}``.

Everything is drawn from a ``torch.Generator``; nothing touches the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = [
    "AugmentationConfig",
    "NO_GEOMETRY",
    "output_size",
    "random_affine",
    "warp",
    "warp_linear_maps",
    "polynomial_basis",
    "random_smooth_fields",
]


@dataclass(frozen=True)
class AugmentationConfig:
    """Augmentation settings.

    Attributes
    ----------
    geometric : bool
        Apply random flips/rotation/zoom/shift; if False only resample to the target size.
    flip_lr_prob, flip_ud_prob : float
        Probability of a left-right (X) and of an anterior-posterior (Y) flip.
    max_rotation_deg : float
        Rotation angle uniform in ``[-max, max]`` degrees.
    zoom : (float, float)
        Isotropic zoom factor, uniform in this range (> 1 enlarges the object).
    max_shift : float
        Shift along each axis, uniform in ``[-max, max]`` times the field of view.
    t1_degree, t1_max_rel : int, float
        Degree and largest relative amplitude of the T1 polynomial factor ``1 + p``.
    bias_degree, bias_max_log : int, float
        Degree and largest amplitude of ``p`` in the bias field ``exp(p)``.
    phase_degree, phase_max : int, float
        Degree and largest amplitude (radians) of the phase polynomial.
    """

    geometric: bool = True
    flip_lr_prob: float = 0.5
    flip_ud_prob: float = 0.5
    max_rotation_deg: float = 10.0
    zoom: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.04
    t1_degree: int = 2
    t1_max_rel: float = 0.1
    bias_degree: int = 3
    bias_max_log: float = 0.3
    phase_degree: int = 2
    phase_max: float = math.pi

    def __post_init__(self) -> None:
        for name in ("flip_lr_prob", "flip_ud_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {v}")
        if not 0.0 < self.zoom[0] <= self.zoom[1]:
            raise ValueError(f"zoom must be (low, high) with 0 < low <= high; got {self.zoom}")
        for name in ("max_rotation_deg", "max_shift", "t1_max_rel", "bias_max_log", "phase_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.t1_max_rel >= 1:
            raise ValueError(f"t1_max_rel must be < 1 (T1 must stay positive); got {self.t1_max_rel}")
        for name in ("t1_degree", "bias_degree", "phase_degree"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")


#: Only the smooth fields, no flips/rotation/zoom/shift.
NO_GEOMETRY = AugmentationConfig(geometric=False)


def output_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """The output grid ``(Y, X)`` of a dataset: an int means a square; each side must be >= 4."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if not isinstance(image_size, Sequence) or len(image_size) != 2 or min(image_size) < 4:
        raise ValueError(f"image_size must be an int or (Y, X), each >= 4; got {image_size}")
    return int(image_size[0]), int(image_size[1])


def random_affine(
    in_shape: tuple[int, int],
    voxel_size_mm: tuple[float, float],
    out_shape: tuple[int, int],
    config: AugmentationConfig = AugmentationConfig(),
    generator: torch.Generator | None = None,
    fov_mm: float | None = None,
) -> torch.Tensor:
    """Random affine for ``F.affine_grid`` (output grid -> input grid, normalised coordinates).

    Parameters
    ----------
    in_shape : (Y, X)
        Shape of the anatomy slice.
    voxel_size_mm : (float, float)
        Its voxel size (Y, X) in mm.
    out_shape : (Y, X)
        Target image shape.
    config
        Augmentation settings; with ``geometric=False`` the map only resamples (no draws).
    generator
        Source of randomness. Always draws the same number of values when ``geometric`` is True.
    fov_mm
        Square field of view of the output; default the larger extent of the input grid.

    Returns
    -------
    Tensor ``(1, 2, 3)`` float32.
    """
    ny_in, nx_in = int(in_shape[0]), int(in_shape[1])
    ny_out, nx_out = int(out_shape[0]), int(out_shape[1])
    ext_y, ext_x = ny_in * float(voxel_size_mm[0]), nx_in * float(voxel_size_mm[1])
    pix = (fov_mm if fov_mm is not None else max(ext_y, ext_x)) / max(ny_out, nx_out)
    # half extents in mm of the output and input grids (align_corners=False convention)
    d_out = torch.diag(torch.tensor([nx_out * pix / 2, ny_out * pix / 2], dtype=torch.float64))
    d_in_inv = torch.diag(torch.tensor([2 / ext_x, 2 / ext_y], dtype=torch.float64))
    lin = torch.eye(2, dtype=torch.float64)
    shift = torch.zeros(2, dtype=torch.float64)
    if config.geometric:
        u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
        fx = -1.0 if u[0] < config.flip_lr_prob else 1.0
        fy = -1.0 if u[1] < config.flip_ud_prob else 1.0
        ang = math.radians((2 * u[2] - 1) * config.max_rotation_deg)
        zoom = config.zoom[0] + (config.zoom[1] - config.zoom[0]) * u[3]
        c, s = math.cos(ang), math.sin(ang)
        rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        lin = rot @ torch.diag(torch.tensor([fx, fy], dtype=torch.float64)) / zoom
        fov = 2 * d_out.diagonal()
        shift = torch.tensor([(2 * u[4] - 1), (2 * u[5] - 1)], dtype=torch.float64) * config.max_shift * fov
    theta = torch.cat([d_in_inv @ lin @ d_out, (d_in_inv @ shift)[:, None]], dim=1)
    return theta[None].to(torch.float32)


def warp(fields: torch.Tensor, theta: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """Resample ``fields`` ``(M, Y, X)`` with an affine from :func:`random_affine`.

    Bilinear, zero outside the input grid. Returns ``(M, *out_shape)``.
    """
    if fields.ndim != 3:
        raise ValueError(f"fields must have shape (M, Y, X); got {tuple(fields.shape)}")
    size = (1, fields.shape[0], int(out_shape[0]), int(out_shape[1]))
    grid = F.affine_grid(theta.to(fields.dtype), size, align_corners=False)
    return F.grid_sample(fields[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def warp_linear_maps(
    fractions: torch.Tensor,
    weights: torch.Tensor,
    offsets: torch.Tensor,
    theta: torch.Tensor,
    out_shape: tuple[int, int],
) -> torch.Tensor:
    """Resampled maps ``W f + b`` of a slice of fractions, with zero fractions outside the grid.

    Bilinear resampling is linear, so resampling the fractions and then combining them equals
    combining and then resampling (offsets added after resampling, so that outside the input
    grid the maps take their background value ``b``). The cheaper order is chosen: resample
    ``min(K, M)`` channels.

    Parameters
    ----------
    fractions : ``(K, Y, X)``
    weights : ``(M, K)``
    offsets : ``(M,)``
    theta : ``(1, 2, 3)`` from :func:`random_affine`
    out_shape : (Y', X')

    Returns
    -------
    Tensor ``(M, Y', X')``.
    """
    k, m = fractions.shape[0], weights.shape[0]
    if weights.shape[1] != k or offsets.shape != (m,):
        raise ValueError(
            f"weights must be (M, K) with K = {k} and offsets (M,); "
            f"got {tuple(weights.shape)} and {tuple(offsets.shape)}"
        )
    if k <= m:
        maps = torch.addmm(offsets[:, None], weights, warp(fractions, theta, out_shape).reshape(k, -1))
    else:
        lin = (weights @ fractions.reshape(k, -1)).reshape(m, *fractions.shape[1:])
        maps = warp(lin, theta, out_shape).reshape(m, -1) + offsets[:, None]
    return maps.reshape(m, int(out_shape[0]), int(out_shape[1]))


@lru_cache(maxsize=16)
def _basis_cached(ny: int, nx: int, degree: int) -> torch.Tensor:
    y = (torch.arange(ny, dtype=torch.float64) + 0.5) * (2 / ny) - 1
    x = (torch.arange(nx, dtype=torch.float64) + 0.5) * (2 / nx) - 1
    terms = [y[:, None] ** b * x[None, :] ** a for d in range(degree + 1) for a in range(d + 1) for b in [d - a]]
    return torch.stack(terms).to(torch.float32).contiguous()


def polynomial_basis(shape: tuple[int, int], degree: int) -> torch.Tensor:
    """Monomials ``x^a y^b`` with ``a + b <= degree`` on pixel centres in ``[-1, 1]²``.

    Returns a cached, read-only-by-convention tensor ``((degree+1)(degree+2)/2, Y, X)`` float32,
    ordered by total degree.
    """
    if int(degree) < 0:
        raise ValueError(f"degree must be >= 0; got {degree}")
    return _basis_cached(int(shape[0]), int(shape[1]), int(degree))


def random_smooth_fields(
    shape: tuple[int, int],
    degrees: tuple[int, ...] | list[int],
    max_abs: tuple[float, ...] | list[float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random polynomial fields with a bounded largest absolute value.

    Field ``j`` is a polynomial of total degree ``degrees[j]`` with standard normal coefficients,
    scaled so that ``max |field_j|`` over the image equals ``a_j ~ U(0, max_abs[j])``.

    Parameters
    ----------
    shape : (Y, X)
    degrees : sequence of int
        Degree of each field.
    max_abs : sequence of float
        Bound on each field's absolute value.
    generator
        Source of randomness.

    Returns
    -------
    Tensor ``(len(degrees), Y, X)`` float32.
    """
    if len(degrees) != len(max_abs):
        raise ValueError(f"degrees and max_abs must have the same length; got {len(degrees)} and {len(max_abs)}")
    n = len(degrees)
    dmax = max(int(d) for d in degrees)
    basis = polynomial_basis(shape, dmax)
    nb = basis.shape[0]
    coef = torch.randn(n, nb, generator=generator)
    amp = torch.rand(n, generator=generator) * torch.tensor([float(m) for m in max_abs])
    # zero the coefficients above each field's own degree (terms are ordered by total degree)
    n_terms = torch.tensor([(int(d) + 1) * (int(d) + 2) // 2 for d in degrees])
    coef = coef * (torch.arange(nb)[None, :] < n_terms[:, None])
    fields = (coef @ basis.reshape(nb, -1)).reshape(n, *basis.shape[1:])
    peak = fields.abs().amax(dim=(-2, -1)).clamp_min(1e-12)
    return fields * (amp / peak)[:, None, None]
