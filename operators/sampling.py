"""Sampling patterns: 1-D variable-density Cartesian masks and radial trajectories.

Choices
-------
* :func:`variable_density_mask` undersamples the phase-encode axis ``Y`` (constant along ``X``).
  Every contrast gets exactly ``round(Y / acceleration)`` lines (halves round up): the ``n_center``
  lines around the k-space centre ``Y // 2`` (the centre of the centred FFT) plus lines drawn
  without replacement with probability ``∝ (1 - |y - Y//2| / (Y/2 + 1)) ** power``. The default
  ``n_center = round(n_lines / 4)`` gives 12 / 8 / 6 centre lines at 4x / 6x / 8x for ``Y = 192``
  (the PINQI paper used 12 / 10 / 8). Each contrast (and batch entry) has its own pattern.
* :func:`radial_trajectory` returns ``(T, 2, K)`` with rows ``(k_y, k_x)`` in radians/pixel,
  ``K = n_spokes · n_readout`` ordered spoke by spoke; a spoke samples ``r_j = 2π (j - n_readout/2)
  / n_readout`` (``[-π, π)``, the centre at ``j = n_readout / 2``) along the direction ``θ``
  (``k_x = r cos θ``, ``k_y = r sin θ``), wrapped periodically into ``[-π, π)``.
* Randomness comes only from the ``generator`` argument (a ``torch.Generator`` or an int seed);
  ``None`` draws a fresh seed from the operating system (never the global RNG).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0
"""Golden angle for radial spokes over 180°: ``180° · (√5 - 1) / 2 ≈ 111.246°`` (in radians)."""


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A CPU ``torch.Generator`` from a generator, an int seed or ``None`` (fresh OS entropy)."""
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    if generator is None:
        g.seed()
    elif isinstance(generator, int) and not isinstance(generator, bool):
        g.manual_seed(generator)
    else:
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None; got {type(generator).__name__}"
        )
    return g


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


def _shape2d(shape: Sequence[int]) -> tuple[int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a (Y, X) pair of positive ints; got {shape!r}") from None
    if len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"shape must be a (Y, X) pair of positive ints; got {shape!r}")
    return dims[0], dims[1]


def n_sampled_lines(n_lines_total: int, acceleration: float) -> int:
    """``round(Y / acceleration)`` (halves round up), at least 1: the lines kept per contrast."""
    return max(1, min(n_lines_total, math.floor(n_lines_total / acceleration + 0.5)))


def variable_density_mask(n_times: int, shape: Sequence[int], acceleration: float,
                          n_center: int | None = None, generator: torch.Generator | int | None = None,
                          batch_size: int | None = None, dtype: torch.dtype = torch.bool,
                          power: float = 2.0) -> torch.Tensor:
    """Random 1-D variable-density Cartesian undersampling along ``Y``, one pattern per contrast.

    Parameters
    ----------
    n_times
        Number of contrasts ``T``.
    shape
        Image/k-space size ``(Y, X)``; lines are phase-encode rows ``y``.
    acceleration
        Undersampling factor ``R >= 1`` (float allowed); ``round(Y / R)`` lines per contrast.
    n_center
        Fully sampled centre lines (around ``Y // 2``) included in every pattern; default
        ``round(n_lines / 4)`` with ``n_lines = round(Y / R)``. Must not exceed ``n_lines``.
    generator
        ``torch.Generator``, int seed, or ``None`` (fresh random seed).
    batch_size
        If given, return ``(B, T, Y, X)`` with an independent pattern per entry.
    dtype
        ``torch.bool`` (default) or a real floating dtype (0/1 values).
    power
        Exponent of the sampling density ``(1 - |y - Y//2| / (Y/2 + 1)) ** power`` (>= 0; 0 is uniform).

    Returns
    -------
    Mask ``(T, Y, X)`` or ``(B, T, Y, X)``, constant along ``X``.
    """
    n_times = _positive_int("n_times", n_times)
    ny, nx = _shape2d(shape)
    is_number = isinstance(acceleration, (int, float)) and not isinstance(acceleration, bool)
    if not is_number or not math.isfinite(acceleration):
        raise TypeError(f"acceleration must be a finite number >= 1; got {acceleration!r}")
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1; got {acceleration}")
    if batch_size is not None:
        batch_size = _positive_int("batch_size", batch_size)
    if not (dtype == torch.bool or dtype.is_floating_point):
        raise TypeError(f"dtype must be torch.bool or a real floating dtype; got {dtype}")
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power >= 0):
        raise ValueError(f"power must be a finite number >= 0; got {power!r}")
    n_lines = n_sampled_lines(ny, float(acceleration))
    if n_center is None:
        n_center = math.floor(n_lines / 4 + 0.5)
    if isinstance(n_center, bool) or not isinstance(n_center, int) or n_center < 0:
        raise ValueError(f"n_center must be a non-negative int; got {n_center!r}")
    if n_center > n_lines:
        raise ValueError(
            f"n_center must be at most the number of sampled lines round(Y / acceleration) = "
            f"round({ny} / {acceleration}) = {n_lines}; got n_center = {n_center}"
        )
    gen = as_generator(generator)

    centre_start = ny // 2 - n_center // 2
    is_centre = torch.zeros(ny, dtype=torch.bool)
    is_centre[centre_start : centre_start + n_center] = True
    distance = (torch.arange(ny, dtype=torch.float64) - ny // 2).abs() / (ny / 2 + 1)
    weights = (1 - distance).pow(power)
    weights[is_centre] = 0  # the centre is always sampled; draw the rest elsewhere

    n_patterns = (batch_size or 1) * n_times
    lines = is_centre.expand(n_patterns, ny).clone()
    n_random = n_lines - n_center
    if n_random > 0:
        picks = torch.multinomial(weights.expand(n_patterns, ny), n_random, replacement=False, generator=gen)
        lines.scatter_(1, picks, True)
    lines = lines.reshape(*(() if batch_size is None else (batch_size,)), n_times, ny, 1)
    return lines.expand(*lines.shape[:-1], nx).to(dtype).contiguous()


def radial_trajectory(n_times: int, n_spokes: int, n_readout: int, mode: str = "golden",
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Radial k-space trajectory, a different set of spokes for each contrast.

    Parameters
    ----------
    n_times
        Number of contrasts ``T``.
    n_spokes
        Spokes per contrast.
    n_readout
        Samples per spoke, spanning ``[-π, π)`` radians/pixel (``2 · Y`` oversamples the readout 2x).
    mode
        ``"golden"``: spoke ``s`` of contrast ``t`` at angle ``(t · n_spokes + s) · 111.246°`` (the
        golden-angle sequence continues across contrasts); ``"rotated"``: ``n_spokes`` uniform
        spokes over 180°, rotated by ``t / T`` of the spoke spacing for contrast ``t``.
    dtype
        Real floating dtype of the result.

    Returns
    -------
    Trajectory ``(T, 2, n_spokes · n_readout)``, rows ``(k_y, k_x)``, radians/pixel in ``[-π, π)``.
    """
    n_times = _positive_int("n_times", n_times)
    n_spokes = _positive_int("n_spokes", n_spokes)
    n_readout = _positive_int("n_readout", n_readout)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a real floating dtype; got {dtype}")
    spoke = torch.arange(n_spokes, dtype=torch.float64)
    t = torch.arange(n_times, dtype=torch.float64).unsqueeze(-1)
    if mode == "golden":
        angles = (t * n_spokes + spoke) * GOLDEN_ANGLE
    elif mode == "rotated":
        spacing = math.pi / n_spokes
        angles = spoke * spacing + t * (spacing / n_times)
    else:
        raise ValueError(f"mode must be 'golden' or 'rotated'; got {mode!r}")
    radius = (torch.arange(n_readout, dtype=torch.float64) - n_readout / 2) * (2 * math.pi / n_readout)
    angles = angles.unsqueeze(-1)  # (T, S, 1)
    k = torch.stack([radius * torch.sin(angles), radius * torch.cos(angles)], dim=1)  # (T, 2, S, R)
    k = torch.remainder(k + math.pi, 2 * math.pi) - math.pi
    k = k.reshape(n_times, 2, n_spokes * n_readout).to(dtype)
    # Rounding to a narrower dtype may land exactly on +π; that is the frequency -π.
    return torch.where(k >= math.pi, k - 2 * math.pi, k)


def ramp_density(trajectory: torch.Tensor, im_size: Sequence[int] | None = None) -> torch.Tensor:
    """Ram-Lak (``|k|``) density compensation for a radial trajectory.

    Parameters
    ----------
    trajectory
        ``(*b, T, 2, K)`` radial trajectory (radians/pixel), e.g. from :func:`radial_trajectory`.
    im_size
        ``(Y, X)``. If given, the weights are the k-space area per sample scaled so that
        ``AᴴA ≈ I`` for a fully sampled radial acquisition with ``A = W^{1/2} N`` (:class:`NUFFTOp`):
        ``w = Y X |k| / (2 K)`` (K samples per contrast, i.e. per spoke ``π/n_spokes · 2π/n_readout``
        area at radius ``|k|``); otherwise normalised to a maximum of 1.

    Returns
    -------
    Real weights ``(*b, T, K)``. The centre sample gets the weight of radius ``Δk / 4`` (a quarter
    of the smallest non-zero radius), the area-equivalent of the central disc.
    """
    if not (isinstance(trajectory, torch.Tensor) and trajectory.is_floating_point()):
        got = trajectory.dtype if isinstance(trajectory, torch.Tensor) else type(trajectory).__name__
        raise TypeError(f"trajectory must be a real floating tensor; got {got}")
    if trajectory.ndim < 3 or trajectory.shape[-2] != 2:
        raise ValueError(f"trajectory must have shape (*b, T, 2, K); got {tuple(trajectory.shape)}")
    radius = torch.linalg.vector_norm(trajectory, dim=-2)
    nonzero = radius[radius > 0]
    floor = (nonzero.min() / 4) if nonzero.numel() else radius.new_tensor(1.0)
    radius = torch.maximum(radius, floor)
    if im_size is None:
        return radius / radius.amax(dim=-1, keepdim=True)
    ny, nx = _shape2d(im_size)
    return radius * (ny * nx / (2 * trajectory.shape[-1]))


def with_calibration_lines(mask: torch.Tensor, contrast: int, n_lines: int) -> torch.Tensor:
    """A copy of ``mask`` whose contrast ``contrast`` also samples ``n_lines`` centre lines (ACS).

    Parallel-imaging protocols acquire a fully sampled calibration region on top of the
    accelerated lines ("R = 8 with 24 ACS lines"); coil maps are estimated from it. Here it is
    added to one contrast (the PINQI paper calibrates on the longest saturation delay).

    Parameters
    ----------
    mask
        ``(*b, T, Y, X)`` bool or 0/1 sampling mask.
    contrast
        Index of the contrast in ``[-T, T)``.
    n_lines
        Centre lines ``Y // 2 - n_lines // 2 … + n_lines - 1`` (at most ``Y``; 0 leaves ``mask``).

    Returns
    -------
    The mask, same shape and dtype.
    """
    if not isinstance(mask, torch.Tensor) or mask.ndim < 3:
        raise ValueError(f"mask must be a tensor (*b, T, Y, X); got {getattr(mask, 'shape', type(mask).__name__)}")
    n_times, ny = mask.shape[-3], mask.shape[-2]
    if isinstance(contrast, bool) or not isinstance(contrast, int) or not -n_times <= contrast < n_times:
        raise ValueError(f"contrast must be an int in [-{n_times}, {n_times}); got {contrast!r}")
    if isinstance(n_lines, bool) or not isinstance(n_lines, int) or not 0 <= n_lines <= ny:
        raise ValueError(f"n_lines must be an int in [0, Y = {ny}]; got {n_lines!r}")
    out = mask.clone()
    start = ny // 2 - n_lines // 2
    out[..., contrast, start : start + n_lines, :] = 1
    return out

