"""simulate_coil_maps and estimate_coil_maps."""

from __future__ import annotations

import math

import pytest
import torch

from operators.coil_maps import estimate_coil_maps, simulate_coil_maps
from operators.fft import centered_fft


def _coords(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(n, dtype=torch.float64) - n // 2) / n
    return torch.meshgrid(c, c, indexing="ij")


def _ellipse(n: int) -> torch.Tensor:
    y, x = _coords(n)
    return (y / 0.42) ** 2 + (x / 0.32) ** 2 < 1


# ------------------------------------------------------------------------------ simulation
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_simulated_maps_normalised_inside_object_and_zero_outside(dtype: torch.dtype) -> None:
    obj = _ellipse(32)
    maps = simulate_coil_maps(8, (32, 32), object_mask=obj, generator=0, dtype=dtype)
    assert maps.shape == (8, 32, 32) and maps.dtype == dtype
    energy = maps.abs().square().sum(0)
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    assert torch.allclose(energy[obj], torch.ones_like(energy[obj]), atol=tol)
    assert (energy[~obj] == 0).all()
    everywhere = simulate_coil_maps(8, (32, 32), generator=0, dtype=dtype).abs().square().sum(0)
    assert torch.allclose(everywhere, torch.ones_like(everywhere), atol=tol)


def test_simulation_deterministic_and_seed_dependent() -> None:
    a = simulate_coil_maps(4, (16, 20), generator=7)
    b = simulate_coil_maps(4, (16, 20), generator=torch.Generator().manual_seed(7))
    c = simulate_coil_maps(4, (16, 20), generator=8)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    state = torch.get_rng_state()
    simulate_coil_maps(4, (16, 20))
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be used"


def test_batch_gives_fresh_maps_per_sample() -> None:
    obj = torch.stack([_ellipse(24), torch.ones(24, 24, dtype=torch.bool)])
    maps = simulate_coil_maps(6, (24, 24), object_mask=obj, generator=1, batch_size=2)
    assert maps.shape == (2, 6, 24, 24)
    assert not torch.allclose(maps[0][:, obj[0]], maps[1][:, obj[0]])
    assert (maps[0].abs().sum(0)[~obj[0]] == 0).all() and (maps[1].abs().sum(0) > 0).all()


def _fit_gaussians(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``log|c| = -ln2 |p - centre|² / h²`` per coil exactly: returns half-widths and centres."""
    n = raw.shape[-1]
    y, x = _coords(n)
    features = [(y**2 + x**2), y, x, torch.ones_like(y)]
    design = torch.stack([f.reshape(-1) for f in features], 1)  # (Y·X, 4)
    log_mag = raw.abs().log().reshape(raw.shape[0], -1).T  # (Y·X, C)
    coef = torch.linalg.lstsq(design, log_mag).solution  # (4, C)
    alpha = coef[0]
    centres = torch.stack([-coef[1] / (2 * alpha), -coef[2] / (2 * alpha)], 1)
    return torch.sqrt(-math.log(2) / alpha), centres


def test_half_widths_uniform_in_range_and_coils_on_a_ring() -> None:
    raw = simulate_coil_maps(16, (24, 24), generator=2, dtype=torch.complex128, batch_size=16,
                             normalize=False)
    half_widths, centres = _fit_gaussians(raw.reshape(-1, 24, 24))
    assert (half_widths >= 0.2 - 1e-9).all() and (half_widths <= 0.5 + 1e-9).all()
    # 256 draws of U[0.2, 0.5]: the extremes and the mean are well determined.
    assert half_widths.min() < 0.21 and half_widths.max() > 0.49
    assert abs(float(half_widths.mean()) - 0.35) < 0.02
    radius = torch.linalg.vector_norm(centres, dim=1)
    assert ((radius > 0.44) & (radius < 0.56)).all()
    # birdcage: the 16 coils of one sample are spread evenly around the ring
    angles = torch.sort(torch.atan2(centres[:16, 0], centres[:16, 1])).values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi]))
    assert torch.allclose(gaps, torch.full_like(gaps, 2 * math.pi / 16), atol=0.25 * 2 * math.pi / 16)


def test_phase_is_a_smooth_quadratic_polynomial() -> None:
    maps = simulate_coil_maps(8, (32, 32), generator=3, dtype=torch.complex128)
    step_y = torch.angle(maps[:, 1:, :] * maps[:, :-1, :].conj())  # first phase differences
    step_x = torch.angle(maps[:, :, 1:] * maps[:, :, :-1].conj())
    assert step_y.abs().max() < 0.3 and step_x.abs().max() < 0.3, "phase must vary slowly"
    # A degree-2 polynomial has constant second differences (yy, xx and mixed).
    for second in (step_y.diff(dim=1), step_x.diff(dim=2), step_y.diff(dim=2)):
        spread = second.flatten(1).std(dim=1)
        assert spread.max() < 1e-9
    assert step_y.flatten(1).std(dim=1).max() > 1e-3, "the phase should not be constant"


def test_simulation_bad_input() -> None:
    with pytest.raises(ValueError, match="n_coils must be a positive int; got 0"):
        simulate_coil_maps(0, (8, 8))
    with pytest.raises(TypeError, match="complex64 or torch.complex128; got torch.float32"):
        simulate_coil_maps(2, (8, 8), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"object_mask must have shape \(8, 8\); got \(8, 9\)"):
        simulate_coil_maps(2, (8, 8), object_mask=torch.ones(8, 9, dtype=torch.bool))
    with pytest.raises(TypeError, match="object_mask must be a bool tensor; got torch.float32"):
        simulate_coil_maps(2, (8, 8), object_mask=torch.ones(8, 8))


# ------------------------------------------------------------------------------ estimation
def _phantom(n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coil maps ``(C, Y, X)``, object mask and coil images ``(T=2, C, Y, X)`` of a textured ellipse."""
    obj = _ellipse(n)
    csm = simulate_coil_maps(8, (n, n), object_mask=obj, generator=seed, dtype=dtype)
    y, x = _coords(n)
    texture = 1 + 0.3 * torch.cos(2 * math.pi * 3 * x) * torch.sin(2 * math.pi * 2 * y)
    image = (obj * texture * torch.exp(1j * (0.5 + 2 * x))).to(dtype)
    images = torch.stack([image, 0.4 * image])[:, None] * csm
    return csm, obj, images


def _similarity(est: torch.Tensor, true: torch.Tensor, where: torch.Tensor) -> float:
    """Per-pixel ``|Σ_c est_c conj(true_c)| / (‖est‖ ‖true‖)`` averaged over ``where``."""
    num = (est * true.conj()).sum(-3).abs()
    den = torch.linalg.vector_norm(est, dim=-3) * torch.linalg.vector_norm(true, dim=-3)
    return float((num / den.clamp_min(1e-30))[..., where].mean())


@pytest.mark.parametrize("method", ["walsh", "inati"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_estimated_maps_match_simulated_from_centre_lines(method: str, dtype: torch.dtype) -> None:
    n = 64
    csm, obj, images = _phantom(n, dtype, seed=4)
    lines = torch.zeros(n, dtype=torch.bool)
    lines[n // 2 - 12 : n // 2 + 12] = True  # 24 fully sampled centre lines
    lines[::3] = True  # plus undersampled outer lines, which must be ignored
    kspace = centered_fft(images) * lines[:, None]
    est = estimate_coil_maps(kspace, method)
    assert est.shape == (8, n, n) and est.dtype == dtype
    assert _similarity(est, csm, obj) > 0.95
    energy = est.abs().square().sum(0)
    signal = energy > 0
    assert signal[obj].all(), "every object pixel has signal"
    assert torch.allclose(energy[signal], torch.ones_like(energy[signal]), atol=1e-4)
    assert not signal[0, 0] and not signal[-1, -1], "far background must be masked out"
    explicit = estimate_coil_maps(kspace, method, n_center=24)
    assert _similarity(explicit, csm, obj) > 0.95


@pytest.mark.parametrize("method", ["walsh", "inati"])
def test_estimation_from_coil_images_with_batch(method: str) -> None:
    n = 32
    csm_a, obj, images_a = _phantom(n, torch.complex128, seed=5)
    csm_b, _, images_b = _phantom(n, torch.complex128, seed=6)
    est = estimate_coil_maps(torch.stack([images_a, images_b]), method, domain="image", kernel_size=3)
    assert est.shape == (2, 8, n, n)
    assert _similarity(est[0], csm_a, obj) > 0.99 and _similarity(est[1], csm_b, obj) > 0.99
    single = estimate_coil_maps(images_b, method, domain="image", kernel_size=3)
    assert torch.allclose(single, est[1], atol=1e-10)


def test_estimation_bad_input() -> None:
    k = torch.zeros(2, 4, 16, 16, dtype=torch.complex64)
    k[..., 6:10, :] = 1
    with pytest.raises(TypeError, match="complex.*float32"):
        estimate_coil_maps(k.real)
    with pytest.raises(ValueError, match=r"\(\*b, T, C, Y, X\).*got \(4, 16, 16\)"):
        estimate_coil_maps(k[0])
    with pytest.raises(ValueError, match="'walsh', 'inati' or 'espirit'; got 'sense'"):
        estimate_coil_maps(k, "sense")
    with pytest.raises(ValueError, match="kernel_size must be a positive odd int; got 4"):
        estimate_coil_maps(k, kernel_size=4)
    k[..., 8, :] = 0
    with pytest.raises(ValueError, match="centre line y = Y//2 = 8 is not sampled"):
        estimate_coil_maps(k)
    with pytest.raises(ValueError, match=r"n_center must be an int in \[1, Y = 16\]; got 17"):
        estimate_coil_maps(k, n_center=17)
