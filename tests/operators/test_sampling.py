"""variable_density_mask, radial_trajectory and ramp_density."""

from __future__ import annotations

import math

import pytest
import torch

from operators.sampling import GOLDEN_ANGLE, radial_trajectory, ramp_density, variable_density_mask


def _lines(mask: torch.Tensor) -> torch.Tensor:
    """Sampled phase-encode lines ``(..., Y)`` of a mask ``(..., Y, X)``."""
    return mask[..., 0]


# ------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("ny, nx, acceleration", [(192, 192, 4), (192, 160, 6), (192, 192, 8.0), (64, 32, 3),
                                                  (37, 11, 5), (50, 8, 2.5), (8, 8, 8), (16, 4, 1)])
def test_mask_has_exactly_round_y_over_r_lines(ny: int, nx: int, acceleration: float) -> None:
    mask = variable_density_mask(6, (ny, nx), acceleration, generator=0)
    assert mask.shape == (6, ny, nx) and mask.dtype == torch.bool
    expected = max(1, math.floor(ny / acceleration + 0.5))
    assert _lines(mask).sum(-1).tolist() == [expected] * 6


def test_paper_line_counts_and_default_centre() -> None:
    for acceleration, lines, centre in [(4, 48, 12), (6, 32, 8), (8, 24, 6)]:
        mask = variable_density_mask(5, (192, 192), acceleration, generator=1)
        assert _lines(mask).sum(-1).tolist() == [lines] * 5
        centre_rows = slice(96 - centre // 2, 96 - centre // 2 + centre)
        assert _lines(mask)[:, centre_rows].all()


@pytest.mark.parametrize("n_center", [0, 1, 7, 10, 24])
def test_centre_lines_always_sampled(n_center: int) -> None:
    mask = variable_density_mask(20, (64, 16), 2.6, n_center=n_center, generator=2)
    start = 32 - n_center // 2
    assert _lines(mask)[:, start : start + n_center].all()
    assert _lines(mask).sum(-1).eq(25).all()


def test_mask_constant_along_x_and_batch_shape() -> None:
    mask = variable_density_mask(3, (32, 12), 4, generator=3, batch_size=4)
    assert mask.shape == (4, 3, 32, 12)
    assert (mask == mask[..., :1]).all()
    flat = _lines(mask).reshape(12, 32)
    assert len({tuple(row.tolist()) for row in flat}) == 12, "every (b, t) pattern should differ"


def test_patterns_differ_between_contrasts() -> None:
    mask = variable_density_mask(5, (96, 96), 4, generator=4)
    rows = {tuple(r.tolist()) for r in _lines(mask)}
    assert len(rows) == 5


def test_seed_reproducibility_and_generator_equivalence() -> None:
    a = variable_density_mask(4, (64, 64), 6.0, generator=123)
    b = variable_density_mask(4, (64, 64), 6.0, generator=torch.Generator().manual_seed(123))
    c = variable_density_mask(4, (64, 64), 6.0, generator=124)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_mask_does_not_touch_global_rng() -> None:
    state = torch.get_rng_state()
    variable_density_mask(4, (32, 32), 4, generator=5)
    variable_density_mask(4, (32, 32), 4)  # fresh OS seed
    assert torch.equal(torch.get_rng_state(), state)


def test_density_falls_off_from_centre() -> None:
    mask = variable_density_mask(400, (128, 8), 8, n_center=4, generator=6)
    freq = _lines(mask).double().mean(0)
    inner = freq[64 - 20 : 64 - 2].mean() + freq[64 + 2 : 64 + 20].mean()
    outer = freq[:18].mean() + freq[-18:].mean()
    assert inner > 2 * outer, f"near-centre frequency {float(inner):.3f} vs edge {float(outer):.3f}"


def test_float_dtype_mask() -> None:
    mask = variable_density_mask(2, (16, 4), 4, generator=7, dtype=torch.float32)
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kwargs, err, pattern", [
    (dict(acceleration=0.5), ValueError, "acceleration must be >= 1; got 0.5"),
    (dict(acceleration=4, n_center=20), ValueError, r"round\(64 / 4\) = 16; got n_center = 20"),
    (dict(acceleration=4, n_center=-1), ValueError, "n_center must be a non-negative int"),
    (dict(acceleration=float("nan")), TypeError, "acceleration must be a finite number"),
    (dict(acceleration=4, shape=(64,)), ValueError, r"\(Y, X\) pair.*\(64,\)"),
    (dict(acceleration=4, n_times=0), ValueError, "n_times must be a positive int; got 0"),
    (dict(acceleration=4, dtype=torch.complex64), TypeError, "torch.bool or a real floating"),
    (dict(acceleration=4, generator="seed"), TypeError, "torch.Generator, an int seed or None"),
])
def test_mask_bad_input(kwargs: dict, err: type, pattern: str) -> None:
    args = dict(n_times=2, shape=(64, 8)) | kwargs
    with pytest.raises(err, match=pattern):
        variable_density_mask(**args)


# ------------------------------------------------------------------------------ radial
def _spoke_angles(traj: torch.Tensor, n_spokes: int, n_readout: int) -> torch.Tensor:
    """Direction of each spoke ``(T, S)`` from its first sample past the centre."""
    k = traj.reshape(traj.shape[0], 2, n_spokes, n_readout)[..., n_readout // 2 + 1]
    return torch.atan2(k[:, 0], k[:, 1])


@pytest.mark.parametrize("mode", ["golden", "rotated"])
def test_radial_shape_and_range(mode: str) -> None:
    traj = radial_trajectory(3, 5, 16, mode=mode)
    assert traj.shape == (3, 2, 80) and traj.dtype == torch.float32
    assert traj.min() >= -math.pi and traj.max() < math.pi
    radius = torch.linalg.vector_norm(traj.double(), dim=1).reshape(3, 5, 16)
    # radii 2π (j - R/2) / R: the centre sample is at j = R/2, the first at |k| = π
    assert radius[..., 8].max() < 1e-6
    assert torch.allclose(radius[..., 0], torch.full_like(radius[..., 0], math.pi), atol=1e-5)
    assert torch.allclose(radius[..., 9], torch.full_like(radius[..., 9], 2 * math.pi / 16), atol=1e-5)


def test_golden_angle_increment_continues_across_contrasts() -> None:
    t, s, r = 3, 4, 8
    traj = radial_trajectory(t, s, r, mode="golden", dtype=torch.float64)
    angles = _spoke_angles(traj, s, r).reshape(-1)  # spoke order continues across contrasts
    step = torch.remainder(angles.diff(), 2 * math.pi)
    assert torch.allclose(step, torch.full_like(step, math.radians(111.246)), atol=1e-4)
    assert abs(math.degrees(GOLDEN_ANGLE) - 111.246) < 1e-3


def test_rotated_mode_rotates_each_contrast_by_a_fraction_of_the_spacing() -> None:
    t, s, r = 4, 6, 8
    angles = _spoke_angles(radial_trajectory(t, s, r, mode="rotated", dtype=torch.float64), s, r)
    spacing = math.pi / s
    steps = torch.remainder(angles[0].diff(), 2 * math.pi)
    assert torch.allclose(steps, torch.full((s - 1,), spacing, dtype=torch.float64))
    shift = torch.remainder(angles[1:, 0] - angles[:-1, 0], 2 * math.pi)
    assert torch.allclose(shift, torch.full((t - 1,), spacing / t, dtype=torch.float64))


def test_radial_bad_input() -> None:
    with pytest.raises(ValueError, match="mode must be 'golden' or 'rotated'; got 'spiral'"):
        radial_trajectory(2, 3, 8, mode="spiral")
    with pytest.raises(ValueError, match="n_spokes must be a positive int; got 0"):
        radial_trajectory(2, 0, 8)
    with pytest.raises(TypeError, match="real floating dtype"):
        radial_trajectory(2, 3, 8, dtype=torch.complex64)


def test_ramp_density() -> None:
    traj = radial_trajectory(2, 4, 16, dtype=torch.float64)
    w = ramp_density(traj)
    assert w.shape == (2, 64) and float(w.max()) == pytest.approx(1.0) and (w > 0).all()
    radius = torch.linalg.vector_norm(traj, dim=1)
    off_centre = radius > 0
    assert torch.allclose(w[off_centre], radius[off_centre] / math.pi)
    assert torch.allclose(w[~off_centre], torch.full_like(w[~off_centre], (2 * math.pi / 16) / 4 / math.pi))
    scaled = ramp_density(traj, (8, 8))
    assert torch.allclose(scaled, w * math.pi * 64 / (2 * 64))
    with pytest.raises(ValueError, match=r"\(\*b, T, 2, K\)"):
        ramp_density(torch.zeros(3, 5))


def test_with_calibration_lines_adds_a_centre_block_to_one_contrast():
    from operators import with_calibration_lines

    mask = torch.zeros(2, 3, 10, 4, dtype=torch.bool)
    out = with_calibration_lines(mask, -1, 4)
    assert bool(out[:, 2, 3:7].all()) and int(out.sum()) == 2 * 4 * 4 and not bool(mask.any())
    assert torch.equal(with_calibration_lines(mask, 0, 0), mask)
    with pytest.raises(ValueError, match="n_lines"):
        with_calibration_lines(mask, 0, 11)
    with pytest.raises(ValueError, match="contrast"):
        with_calibration_lines(mask, 3, 2)
