"""W2Q over a whole volume at its own resolution (:func:`pinqi.w2q.volume.map_volume`, ``pinqi map``)."""

from __future__ import annotations

import torch

from pinqi.cli.map import SHIPPED_WEIGHTS
from pinqi.w2q.config import load_w2q_config
from pinqi.w2q.model import W2Q
from pinqi.w2q.segmentation import CALIBRATION_CLASSES
from pinqi.w2q.training import load_w2q
from pinqi.w2q.volume import _to_grid, map_volume
from simulation import load_anatomy
from tests.pinqi.w2q.test_calibration import PROTOCOL, TRUTH, TYPES, _phantom, _physical_images, _textbook_images


def test_shrinking_to_the_training_grid_averages_instead_of_sampling() -> None:
    """256² → 64²: white noise keeps less than a third of its standard deviation (an antialiasing
    average over the 4 × 4 pixels and their neighbours), where a plain bilinear sample keeps half; a
    constant stays constant; enlarging is plain bilinear."""
    noise = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    small, info = _to_grid(noise, 64, "bilinear")
    assert small.shape == (1, 1, 64, 64) and info == (256, 256, 256)
    assert 0.1 < float(small.std()) < 0.3  # a (triangle-filtered) average; bilinear sampling alone keeps 1/2
    padded = _to_grid(torch.full((1, 1, 100, 80), 3.0), 64, "bilinear")[0]  # zero-padded to 100² first
    torch.testing.assert_close(padded[..., :50], torch.full((1, 1, 64, 50), 3.0))
    up, _ = _to_grid(noise[..., :32, :32], 64, "bilinear")
    torch.testing.assert_close(up, torch.nn.functional.interpolate(noise[..., :32, :32], size=(64, 64), mode="bilinear",
                                                                   align_corners=False))


def test_map_volume_falls_back_to_the_network_without_pure_tissues() -> None:
    """An untrained network segments nothing pure: the first pass is returned, as without calibration."""
    torch.manual_seed(0)
    model = W2Q(load_w2q_config("micro").model).double().eval()
    f, _, mask = _phantom(16)
    images = _physical_images(f, torch.ones(1, 3, dtype=torch.float64)).expand(2, 3, 16, 16).clone()
    available = torch.ones(3, dtype=torch.bool)
    maps, _, cal = map_volume(model, 16, images.transpose(0, 1), mask.expand(2, 16, 16), PROTOCOL[0], TYPES[0],
                              available, progress=False, return_std=True)
    plain = map_volume(model, 16, images.transpose(0, 1), mask.expand(2, 16, 16), PROTOCOL[0], TYPES[0], available,
                       progress=False, return_std=True, calibrate=False)[0]
    bare = map_volume(model, 16, images.transpose(0, 1), mask.expand(2, 16, 16), PROTOCOL[0], TYPES[0], available,
                      progress=False, calibrate=False)
    with torch.no_grad():
        network = model(images, PROTOCOL.expand(2, 3, 6), TYPES.expand(2, 3), mask.expand(2, 16, 16)).final
    torch.testing.assert_close(bare.transpose(0, 1), (network * mask[:, None]).float())  # the training grid: no refit
    assert cal is None  # an untrained network segments nothing pure: the network's own output
    torch.testing.assert_close(maps, plain)


def test_shipped_w2q_calibrates_at_1_mm() -> None:
    """Two MNI152 slices on the template's own 1 mm grid (233 × 197: resampled for the network, fitted
    and calibrated at 1 mm), textbook spin-echo/FLAIR images (not W2Q's models), unknown gains: the
    calibration runs from the 1 mm maps with the grey-matter corner and reads pure WM and GM T1 and
    T2 within 3 % (measured: 0.1–0.8 %), where the network alone reads WM T1 more than 10 % high and
    the calibration without the corner (pixel size unknown) GM T2 more than 3 % high (4.9 %); and it
    follows a receiver gain of any contrast."""
    model, config, _ = load_w2q(SHIPPED_WEIGHTS, require_trained=True)
    anatomy = load_anatomy("mni152", "test")
    fr = anatomy.fractions[[anatomy.class_names.index(c) for c in CALIBRATION_CLASSES]][:, [4, 7]].transpose(0, 1)
    fr = fr.double()
    mask = fr.sum(1) >= 0.5
    images = _textbook_images(fr, torch.tensor([1.7, 0.6, 3.1], dtype=torch.float64), torch.Generator().manual_seed(2))
    available = torch.ones(3, dtype=torch.bool)

    def run(x: torch.Tensor, calibrate: bool = True, pixel_size: float | None = 1.0):
        maps, std, cal = map_volume(model, config.image_size, x.float().transpose(0, 1), mask, PROTOCOL[0].float(), TYPES[0],
                                    available, progress=False, return_std=True, calibrate=calibrate, pixel_size=pixel_size)
        return maps.transpose(0, 1), std.transpose(0, 1), cal

    def error(p: torch.Tensor, k: int, j: int) -> float:  # ROI of > 95 % class k, parameter j (PD, T1, T2)
        return float(p[:, j][fr[:, k] > 0.95].mean()) / float(TRUTH[k, j]) - 1

    out, std, cal = run(images)
    plain, _, _ = run(images, calibrate=False)
    assert cal is not None and int(cal.pixels[2]) > 1000  # 1 mm pure WM pixels, not those of the 64² grid
    assert cal.calibrated == ("csf", "gm", "wm")
    errors = {(k, j): error(out, k, j) for k in (1, 2) for j in (1, 2)}
    assert max(abs(e) for e in errors.values()) < 0.03, errors
    assert error(plain, 2, 1) > 0.10
    coarse, _, cal_coarse = run(images, pixel_size=None)
    assert cal_coarse is not None and "gm" not in cal_coarse.calibrated and error(coarse, 1, 2) > 0.03
    assert bool(torch.isfinite(std).all()) and bool((std[mask[:, None].expand_as(std)] > 0).all())
    gain = torch.tensor([5.0, 0.3, 1.0], dtype=torch.float64)[None, :, None, None]
    again, _, cal2 = run(images * gain)
    torch.testing.assert_close(cal2.scales, cal.scales * gain.flatten(), rtol=2e-3, atol=0)
    inside = mask[:, None].expand_as(out)
    assert float(((again - out).abs() / out.clamp_min(1e-3))[inside].max()) < 2e-2
