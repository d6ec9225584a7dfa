"""ESPIRiT coil maps (estimate_coil_maps(..., method="espirit")) and the calibration-contrast choice."""

from __future__ import annotations

import math

import pytest
import torch

from operators import MultiCoilCartesianOp, estimate_coil_maps, simulate_coil_maps
from operators.espirit import espirit_maps
from operators.fft import centered_fft
from simulation import load_anatomy
from tests.operators.test_coil_maps import _similarity


def _centre_lines(ny: int, n: int) -> torch.Tensor:
    lines = torch.zeros(ny, dtype=torch.bool)
    lines[ny // 2 - n // 2: ny // 2 - n // 2 + n] = True
    return lines


def _phantom_kspace(n_coils: int = 8, dtype: torch.dtype = torch.complex64, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True maps ``(C, 64, 64)``, object mask, and k-space ``(T=1, C, 64, 64)`` of the phantom
    with 24 fully sampled centre lines plus every 4th outer line."""
    frac = load_anatomy("phantom", "test", shape=(64, 64)).fractions[:, 0]
    obj = frac.sum(0) > 0.5
    image = (1.0 * frac[0] + 0.8 * frac[1] + 0.7 * frac[2]).to(dtype)  # csf, gm, wm
    csm = simulate_coil_maps(n_coils, (64, 64), object_mask=obj, generator=seed, dtype=dtype)
    mask = (_centre_lines(64, 24) | (torch.arange(64) % 4 == 0))[:, None].expand(1, 64, 64)
    kspace = MultiCoilCartesianOp(csm, mask)(image[None])
    return csm, obj, kspace


def _equal_up_to_global_phase(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    rotation = torch.sgn((a * b.conj()).sum())
    return torch.allclose(a, b * rotation, atol=atol)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_espirit_matches_true_maps_better_than_walsh(dtype: torch.dtype) -> None:
    csm, obj, kspace = _phantom_kspace(dtype=dtype)
    est = estimate_coil_maps(kspace, "espirit")
    assert est.shape == (8, 64, 64) and est.dtype == dtype
    espirit, walsh = _similarity(est, csm, obj), _similarity(estimate_coil_maps(kspace, "walsh"), csm, obj)
    # measured: ESPIRiT 0.99999 (SigPy's EspiritCalib the same), Walsh 0.99977
    assert espirit > 0.9999 and espirit > walsh
    energy = est.abs().square().sum(0)
    assert (energy[obj] - 1).abs().max() < 1e-4, "unit norm in the whole object"
    assert torch.equal(est, estimate_coil_maps(kspace, "espirit")), "deterministic"


def test_eigenvalue_is_one_in_the_object_and_crop_masks_noisy_background() -> None:
    csm, obj, kspace = _phantom_kspace()
    calib = kspace[..., 20:44, 20:44]
    maps, eigenvalue = espirit_maps(calib, (64, 64))
    assert eigenvalue.shape == (64, 64) and maps.shape == (8, 64, 64)
    assert (eigenvalue[obj] > 0.97).all() and (eigenvalue <= 1 + 1e-4).all()
    assert _similarity(maps, csm, obj) > 0.9999
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(kspace.shape, generator=g, dtype=torch.complex64) * 0.01
    noisy = (kspace + noise) * (kspace != 0)
    est = estimate_coil_maps(noisy, "espirit")
    kept = est.abs().sum(0) > 0
    assert kept[obj].all() and _similarity(est, csm, obj) > 0.999
    corners = kept[:8, :8] | kept[:8, -8:] | kept[-8:, :8] | kept[-8:, -8:]
    assert not corners.any(), "background far from the object is cropped"
    uncropped = estimate_coil_maps(noisy, "espirit", crop=0.0)
    assert (uncropped.abs().sum(0) > 0).all()


def test_scale_and_global_phase_invariance_and_batch() -> None:
    csm, obj, kspace = _phantom_kspace(dtype=torch.complex128)
    est = estimate_coil_maps(kspace, "espirit")
    scaled = estimate_coil_maps(kspace * (3e4 * math.e ** (2.1j)), "espirit")
    assert _equal_up_to_global_phase(scaled, est, atol=1e-8)
    csm_b, _, kspace_b = _phantom_kspace(dtype=torch.complex128, seed=1)
    batch = estimate_coil_maps(torch.stack([kspace, kspace_b]), "espirit")
    assert batch.shape == (2, 8, 64, 64)
    assert torch.allclose(batch[0], est, atol=1e-10)
    assert _similarity(batch[1], csm_b, obj) > 0.9999


def test_odd_sizes_and_image_domain() -> None:
    ny, nx = 63, 57
    y = (torch.arange(ny, dtype=torch.float64) - ny // 2) / ny
    x = (torch.arange(nx, dtype=torch.float64) - nx // 2) / nx
    obj = (y[:, None] / 0.4) ** 2 + (x[None, :] / 0.35) ** 2 < 1
    csm = simulate_coil_maps(8, (ny, nx), object_mask=obj, generator=3, dtype=torch.complex128)
    images = (obj * (1 + 0.5 * x[None, :])).to(torch.complex128) * csm
    kspace = centered_fft(images) * _centre_lines(ny, 23)[:, None]
    est = estimate_coil_maps(kspace[None], "espirit", kernel_size=5)
    assert est.shape == (8, ny, nx)
    assert _similarity(est, csm, obj) > 0.9999
    from_images = estimate_coil_maps(images[None], "espirit", domain="image", n_center=23, kernel_size=5)
    # same calibration region; only the body-coil phase reference (full- vs low-resolution) differs
    assert _similarity(from_images, est, obj) > 1 - 1e-9


@pytest.mark.parametrize("n_coils", [1, 32])
def test_one_and_many_coils(n_coils: int) -> None:
    csm, obj, kspace = _phantom_kspace(n_coils=n_coils)
    est = estimate_coil_maps(kspace, "espirit")
    assert est.shape == (n_coils, 64, 64)
    energy = est.abs().square().sum(0)
    assert (energy[obj] - 1).abs().max() < 1e-4
    if n_coils == 1:  # one coil is its own body coil: the referenced map is one constant phase
        assert (est[0][obj] - est[0][obj][0]).abs().max() < 1e-4
    else:
        assert _similarity(est, csm, obj) > 0.999


def test_longest_delay_contrast_is_the_calibration() -> None:
    csm, obj, kspace = _phantom_kspace()
    times = torch.tensor([0.5, 8.0, 1.0])
    # Three contrasts; only the longest delay (index 1) has 24 centre lines, the others 4.
    few = _centre_lines(64, 4)[:, None]
    multi = torch.stack([kspace[0] * few, kspace[0] * 0.9, kspace[0] * few * 0.3])  # (T, C, Y, X)
    with pytest.raises(ValueError, match="at least kernel_size = 6 fully sampled centre lines.*got 4 lines"):
        estimate_coil_maps(multi, "espirit")
    best = estimate_coil_maps(multi, "espirit", contrast="longest", times=times)
    assert torch.allclose(best, estimate_coil_maps(multi, "espirit", contrast=1), atol=0)
    assert torch.allclose(best, estimate_coil_maps(multi[1:2], "espirit"), atol=1e-6)
    assert _similarity(best, csm, obj) > 0.9999
    # per sample: times (B, T); the second sample has its longest delay last
    batch = torch.stack([multi, multi[[0, 2, 1]]])
    per_sample = estimate_coil_maps(batch, "walsh", contrast="longest",
                                    times=torch.stack([times, times[[0, 2, 1]]]))
    assert torch.allclose(per_sample[0], per_sample[1], atol=1e-6)
    assert torch.allclose(per_sample[0], estimate_coil_maps(multi[1:2], "walsh"), atol=1e-6)


def test_mask_decides_the_calibration_lines() -> None:
    _, _, kspace = _phantom_kspace()
    mask = (kspace != 0).any(-3)  # (T, Y, X)
    holed = kspace.clone()
    holed[..., 30, :] = 0  # a sampled line whose data happen to be zero: the mask still counts it
    by_mask = estimate_coil_maps(holed, "espirit", mask=mask)
    assert torch.equal(by_mask, estimate_coil_maps(holed, "espirit", n_center=25))  # lines 20-44
    assert not torch.equal(by_mask, estimate_coil_maps(holed, "espirit"))  # lines 31-44 only
    assert torch.equal(by_mask, estimate_coil_maps(holed, "espirit", mask=mask[..., :1]))  # (T, Y, 1)
    # lines sampled in the mask but outside its centre run do not count
    assert torch.equal(estimate_coil_maps(kspace, "walsh", mask=mask[0]),
                       estimate_coil_maps(kspace, "walsh"))
    expected = r"mask must broadcast to \(\*b, T, Y, X\) = \(1, 64, 64\).*got \(2, 64, 64\)"
    with pytest.raises(ValueError, match=expected):
        estimate_coil_maps(kspace, "espirit", mask=mask.expand(2, 64, 64))


def test_espirit_bad_input() -> None:
    _, _, kspace = _phantom_kspace()
    with pytest.raises(ValueError, match="all zero"):
        estimate_coil_maps(torch.zeros_like(kspace), "espirit", n_center=24)
    with pytest.raises(ValueError, match="finite.*1 NaN"):
        bad = kspace.clone()
        bad[0, 3, 30, 30] = float("nan")
        estimate_coil_maps(bad, "espirit")
    lines4 = kspace * _centre_lines(64, 4)[:, None]
    with pytest.raises(ValueError, match="kernel_size = 6 fully sampled centre lines .*got 4 lines"):
        estimate_coil_maps(lines4, "espirit")
    with pytest.raises(ValueError, match="kernel_size = 8 .*got 6 lines"):
        estimate_coil_maps(kspace, "espirit", n_center=6, kernel_size=8)
    with pytest.raises(ValueError, match="crop must be in"):
        estimate_coil_maps(kspace, "espirit", crop=1.0)
    with pytest.raises(ValueError, match="contrast='longest' needs the acquisition times"):
        estimate_coil_maps(kspace, "espirit", contrast="longest")
    with pytest.raises(ValueError, match="times is only used with contrast='longest'"):
        estimate_coil_maps(kspace, "espirit", times=torch.ones(1))
    with pytest.raises(ValueError, match=r"times must have shape \(1,\).*got \(3,\)"):
        estimate_coil_maps(kspace, "espirit", contrast="longest", times=torch.ones(3))
    with pytest.raises(ValueError, match=r"int in \[-T, T\) = \[-1, 1\); got 1"):
        estimate_coil_maps(kspace, "espirit", contrast=1)
