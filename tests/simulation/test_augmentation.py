"""Random affine / warp and smooth polynomial fields."""

from __future__ import annotations

import math

import pytest
import torch

from simulation.augmentation import (
    NO_GEOMETRY,
    AugmentationConfig,
    polynomial_basis,
    random_affine,
    random_smooth_fields,
    warp,
    warp_linear_maps,
)


def _blob(ny: int, nx: int, cy: float, cx: float) -> torch.Tensor:
    y = torch.arange(ny, dtype=torch.float32)[:, None]
    x = torch.arange(nx, dtype=torch.float32)[None, :]
    return torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 8.0)


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    y = torch.arange(img.shape[0], dtype=img.dtype)[:, None]
    x = torch.arange(img.shape[1], dtype=img.dtype)[None, :]
    s = img.sum()
    return float((img * y).sum() / s), float((img * x).sum() / s)


def test_identity_resampling_same_grid_is_exact():
    img = torch.rand(2, 16, 16)
    theta = random_affine((16, 16), (1.0, 1.0), (16, 16), NO_GEOMETRY)
    torch.testing.assert_close(theta, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    torch.testing.assert_close(warp(img, theta, (16, 16)), img)


def test_resampling_fits_the_larger_extent_and_keeps_aspect():
    # 20 x 40 grid of 1 mm -> 20 x 20 output: FOV 40 mm, 2 mm pixels; blob off-centre in X
    img = _blob(20, 40, 9.5, 29.5)[None]
    out = warp(img, random_affine((20, 40), (1.0, 1.0), (20, 20), NO_GEOMETRY), (20, 20))[0]
    cy, cx = _centroid(out)
    # input centre (9.5, 19.5); the blob is 10 mm right of it -> 5 output pixels right of 9.5
    assert abs(cy - 9.5) < 0.3 and abs(cx - 14.5) < 0.3
    # rows 0..4 and 15..19 of the output lie outside the 20 mm high input: zero there
    ones = warp(torch.ones(1, 20, 40), random_affine((20, 40), (1.0, 1.0), (20, 20), NO_GEOMETRY), (20, 20))[0]
    assert float(ones[0].abs().max()) == 0 and float(ones[-1].abs().max()) == 0
    torch.testing.assert_close(ones[6:14], torch.ones(8, 20))


@pytest.mark.parametrize("flip", ["lr", "ud"])
def test_flips(flip):
    cfg = AugmentationConfig(flip_lr_prob=float(flip == "lr"), flip_ud_prob=float(flip == "ud"),
                             max_rotation_deg=0.0, zoom=(1.0, 1.0), max_shift=0.0)
    img = torch.rand(1, 12, 12)
    out = warp(img, random_affine((12, 12), (1.0, 1.0), (12, 12), cfg, torch.Generator().manual_seed(0)), (12, 12))
    torch.testing.assert_close(out, img.flip(-1 if flip == "lr" else -2))


def test_rotation_and_zoom_move_a_blob_as_expected():
    cfg = AugmentationConfig(flip_lr_prob=0.0, flip_ud_prob=0.0, max_rotation_deg=10.0, zoom=(1.1, 1.1),
                             max_shift=0.0)
    img = _blob(64, 64, 31.5, 51.5)[None]  # 20 px right of centre
    out = warp(img, random_affine((64, 64), (1.0, 1.0), (64, 64), cfg, torch.Generator().manual_seed(4)), (64, 64))[0]
    cy, cx = _centroid(out)
    r = math.hypot(cy - 31.5, cx - 31.5)
    ang = math.degrees(math.atan2(cy - 31.5, cx - 31.5))
    assert abs(r - 22.0) < 0.5  # zoom 1.1 enlarges the object
    assert 0.2 < abs(ang) <= 10.0


def test_random_affine_deterministic_and_bounded():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = random_affine((30, 20), (1.0, 1.5), (16, 16), AugmentationConfig(), g1)
    assert torch.equal(a, random_affine((30, 20), (1.0, 1.5), (16, 16), AugmentationConfig(), g2))
    assert a.shape == (1, 2, 3) and a.dtype == torch.float32
    thetas = torch.cat([random_affine((16, 16), (1.0, 1.0), (16, 16), AugmentationConfig(),
                                      torch.Generator().manual_seed(s)) for s in range(100)])
    lin = thetas[:, :, :2].double()
    det = torch.linalg.det(lin).abs()
    assert bool((det >= 1 / 1.1**2 - 1e-5).all() and (det <= 1 / 0.9**2 + 1e-5).all())
    # rotation angle from the normalised matrix: |angle| <= 10 degrees up to the flips
    scale = det.sqrt()
    cos = (lin[:, 0, 0].abs() / scale).clamp(max=1)
    assert float(torch.rad2deg(torch.acos(cos)).max()) <= 10.0 + 1e-3
    assert bool((thetas[:, :, 2].abs() <= 2 * 0.04 + 1e-6).all())


def test_warp_linear_maps_equals_combining_warped_fractions():
    g = torch.Generator().manual_seed(0)
    theta = random_affine((20, 24), (1.0, 1.0), (16, 16), AugmentationConfig(), g)
    f = torch.rand(5, 20, 24, generator=g)
    f = f / f.sum(0, keepdim=True) * 0.9
    for m in (3, 7):  # both orders (warp fractions first / combine first)
        w = torch.randn(m, 5, generator=g)
        b = torch.randn(m, generator=g)
        expected = torch.einsum("mk,kyx->myx", w, warp(f, theta, (16, 16))) + b[:, None, None]
        torch.testing.assert_close(warp_linear_maps(f, w, b, theta, (16, 16)), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        warp_linear_maps(f, torch.zeros(2, 4), torch.zeros(2), theta, (16, 16))


def test_polynomial_basis():
    b = polynomial_basis((8, 6), 2)
    assert b.shape == (6, 8, 6)
    torch.testing.assert_close(b[0], torch.ones(8, 6))
    assert float(b[1:3].abs().max()) < 1.0  # pixel centres strictly inside [-1, 1]
    assert polynomial_basis((8, 6), 2) is b  # cached


def test_smooth_fields_bounded_smooth_deterministic():
    g = torch.Generator().manual_seed(3)
    amps = []
    for _ in range(50):
        f = random_smooth_fields((32, 32), (2, 3, 0), (0.1, 0.3, math.pi), g)
        assert f.shape == (3, 32, 32) and bool(torch.isfinite(f).all())
        peak = f.abs().amax(dim=(-2, -1))
        assert bool((peak <= torch.tensor([0.1, 0.3, math.pi]) + 1e-6).all())
        assert float(f[2].std()) < 1e-6  # degree 0: constant
        # smooth: neighbouring pixels differ by a small part of the field's range
        assert float((f[0, 1:] - f[0, :-1]).abs().max()) <= 0.1 * 6 / 16 + 1e-6
        amps.append(peak)
    amps = torch.stack(amps)
    assert float(amps[:, 0].max()) > 0.08 and float(amps[:, 0].min()) < 0.03  # amplitude ~ U(0, max)
    f1 = random_smooth_fields((16, 16), (2,), (0.1,), torch.Generator().manual_seed(9))
    f2 = random_smooth_fields((16, 16), (2,), (0.1,), torch.Generator().manual_seed(9))
    assert torch.equal(f1, f2)


def test_config_validation():
    with pytest.raises(ValueError, match="flip_lr_prob"):
        AugmentationConfig(flip_lr_prob=1.5)
    with pytest.raises(ValueError, match="zoom"):
        AugmentationConfig(zoom=(1.2, 1.0))
    with pytest.raises(ValueError, match="t1_max_rel"):
        AugmentationConfig(t1_max_rel=1.0)
