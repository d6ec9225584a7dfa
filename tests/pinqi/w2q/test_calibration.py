"""The tissue calibration of W2Q's intensity scales (:mod:`pinqi.w2q.calibration`)."""

from __future__ import annotations

import math

import pytest
import torch

from pinqi.cli.map import SHIPPED_WEIGHTS
from pinqi.w2q import calibration
from pinqi.w2q.calibration import CALIBRATION_PRIOR, TissueCalibration, calibrate_tissues, solve_tissue_map, tissue_shift
from pinqi.w2q.config import load_w2q_config
from pinqi.w2q.model import W2Q
from pinqi.w2q.segmentation import CALIBRATION_CLASSES, segment_tissues, unmix_tissues
from pinqi.w2q.signal import MultiContrastSignal
from pinqi.w2q.training import load_w2q
from pinqi.w2q.volume import map_volume
from simulation import load_anatomy

#: csf, gm, wm (the order of CALIBRATION_CLASSES) as (PD, T1 [s], T2 [s]): 3 T literature values.
TRUTH = torch.tensor([[1.0, 4.0, 1.8], [0.8, 1.3, 0.09], [0.7, 0.85, 0.07]], dtype=torch.float64)
#: T1w spin echo TR 0.55 s TE 12 ms, T2w spin echo TR 5 s TE 0.11 s, FLAIR TR 9 s TE 0.12 s TI 2.4 s.
PROTOCOL = torch.tensor([[[0.55, 0.012, 0.0, 90.0, 0.0, 0.0], [5.0, 0.11, 0.0, 90.0, 0.0, 0.0],
                          [9.0, 0.12, 2.4, 90.0, 0.0, 0.0]]], dtype=torch.float64)
TYPES = torch.tensor([[0, 0, 2]])


def _signal(batch: int = 1) -> MultiContrastSignal:
    return MultiContrastSignal(PROTOCOL.expand(batch, 3, 6), TYPES.expand(batch, 3))


def _tissue_signals(v: torch.Tensor) -> torch.Tensor:
    """``(1, K, T)`` signals of tissues ``v`` ``(K, 3)``."""
    return _signal()(v.T[None, :, :, None])[0, :, :, 0].T[None]


def test_solve_tissue_map_near_literature_values_and_equivariant_in_the_scales() -> None:
    scales = torch.tensor([[3.0, 0.4, 7.0]], dtype=torch.float64)
    m = scales[:, None, :] * _tissue_signals(TRUTH)
    present, available = torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)
    a, v = solve_tissue_map(m, present, available, _signal())
    rel = v[0] / TRUTH - 1
    assert rel[1:, 1].abs().max() < 0.06 and rel[1:, 2].abs().max() < 0.05  # GM/WM T1, T2: the prior's pull only
    ratio = (v[0, 1, 0] / v[0, 2, 0]) / (TRUTH[1, 0] / TRUTH[2, 0])
    assert abs(ratio - 1) < 0.03  # GM/WM PD
    model = a[:, None, :] * _tissue_signals(v[0])
    assert ((model - m).abs() / m.abs().clamp_min(1e-3)).max() < 0.05
    # another receiver gain per contrast: the scales follow it, the tissue values do not move
    gain = torch.tensor([[10.0, 0.1, 2.5]], dtype=torch.float64)
    a2, v2 = solve_tissue_map(m * gain[:, None, :], present, available, _signal())
    torch.testing.assert_close(a2, a * gain, rtol=1e-4, atol=0)
    torch.testing.assert_close(v2, v, rtol=1e-4, atol=0)


def test_solve_tissue_map_shared_is_one_problem_and_absent_tissues_follow_the_prior() -> None:
    m = _tissue_signals(TRUTH)
    ones = torch.ones(1, 3, dtype=torch.bool)
    a1, v1 = solve_tissue_map(m, ones, ones, _signal())
    a2, v2 = solve_tissue_map(m.expand(2, 3, 3), ones.expand(2, 3), ones.expand(2, 3), _signal(2), shared=True)
    torch.testing.assert_close(a2, a1.expand(2, 3), rtol=1e-5, atol=0)
    torch.testing.assert_close(v2, v1.expand(2, 3, 3), rtol=1e-5, atol=0)
    _, v0 = solve_tissue_map(m, torch.zeros(1, 3, dtype=torch.bool), ones, _signal())
    centre = torch.tensor([[(getattr(CALIBRATION_PRIOR[c], p)[0] * getattr(CALIBRATION_PRIOR[c], p)[1]) ** 0.5
                            for p in ("pd", "t1", "t2")] for c in CALIBRATION_CLASSES], dtype=torch.float64)
    torch.testing.assert_close(v0[0], centre, rtol=1e-6, atol=0)  # no data: the prior's (log-)centres
    with pytest.raises(ValueError, match="present must be"):
        solve_tissue_map(m, ones[:, :2], ones, _signal())


def _phantom(n: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Volume fractions ``(1, K, n, n)`` of pure bands of CSF, GM and WM with mixed stripes between
    them, the water-weighted maps ``(1, 3, n, n)`` of those voxels, and the brain mask ``(1, n, n)``."""
    x = torch.linspace(0, 1, n, dtype=torch.float64)[None, :].expand(n, n)
    csf = ((0.35 - x) / 0.1).clamp(0, 1)  # pure up to x = 0.25, mixed with GM up to 0.35
    wm = ((x - 0.65) / 0.1).clamp(0, 1)  # mixed with GM from 0.65, pure from 0.75
    f = torch.stack([csf, 1 - csf - wm, wm])
    water = f * TRUTH[:, 0, None, None]
    w = water / water.sum(0, keepdim=True)
    r1 = (w / TRUTH[:, 1, None, None]).sum(0)
    r2 = (w / TRUTH[:, 2, None, None]).sum(0)
    maps = torch.stack([water.sum(0), 1 / r1, 1 / r2])[None]
    return f[None], maps, torch.ones(1, n, n, dtype=torch.bool)


def test_unmix_tissues_recovers_the_water_fractions() -> None:
    f, maps, mask = _phantom()
    w = unmix_tissues(maps, mask)
    water = f * TRUTH[None, :, 0, None, None]
    torch.testing.assert_close(w, water / water.sum(1, keepdim=True), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="exactly 3 classes"):
        unmix_tissues(maps, mask, names=("gm", "wm"))


def test_segment_tissues_erodes_the_pure_pixels() -> None:
    f, maps, mask = _phantom()
    weights, pure = segment_tissues(maps, mask)
    above = weights > 0.9
    n = mask.shape[-1]
    for k, y, x in pure[0].nonzero().tolist():  # a pure pixel and its 8 neighbours lie inside and above the purity
        assert 0 < y < n - 1 and 0 < x < n - 1 and bool(above[0, k, y - 1 : y + 2, x - 1 : x + 2].all())
    for k in range(3):  # and every such pixel is pure: nothing else is removed
        below = torch.nn.functional.pad((~above[:, k]).double(), (1, 1, 1, 1), value=1.0)  # outside counts as impure
        inner = torch.nn.functional.max_pool2d(below, 3, stride=1)[0] == 0
        assert bool((pure[0, k] == inner).all()) and int(pure[0, k].sum()) >= 2 * (n - 2)


def _physical_images(f: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Images whose tissue signals add in a voxel, one scale per contrast ``(1, T)``."""
    return scales[..., None, None] * torch.einsum("bkyx,kt->btyx", f, _tissue_signals(TRUTH)[0])


def test_calibrate_tissues_uses_pure_csf_and_wm_and_follows_the_scales() -> None:
    f, maps, mask = _phantom()
    scales = torch.tensor([[2.0, 0.5, 1.5]], dtype=torch.float64)
    images = _physical_images(f, scales)
    _, pure = segment_tissues(maps, mask)
    cal = calibrate_tissues(images, pure, _signal())
    assert isinstance(cal, TissueCalibration) and cal.calibrated == ("csf", "wm")
    tissue = _tissue_signals(TRUTH)[0]
    for k in (0, 2):  # the medians of the pure CSF and WM bands are those tissues' signals
        torch.testing.assert_close(cal.signals[k], scales[0] * tissue[k], rtol=1e-9, atol=0)
    assert not bool(cal.signals[1].any())  # grey matter does not enter
    rel = cal.values[2] / TRUTH[2] - 1
    assert float(rel.abs().max()) < 0.06  # WM (PD, T1, T2) up to the prior's pull
    gain = torch.tensor([[7.0, 0.2, 3.0]], dtype=torch.float64)
    again = calibrate_tissues(images * gain[..., None, None], pure, _signal())
    torch.testing.assert_close(again.scales, cal.scales * gain[0], rtol=1e-4, atol=0)
    torch.testing.assert_close(again.values, cal.values, rtol=1e-4, atol=0)
    # an unavailable contrast does not count: its images may hold anything
    missing = images.clone()
    missing[:, 1] = 123.0
    part = calibrate_tissues(missing, pure, _signal(), torch.tensor([True, False, True]))
    assert float((part.values[2, 1] / TRUTH[2, 1] - 1).abs()) < 0.15
    # no pure CSF: no calibration
    no_csf = pure.clone()
    no_csf[:, 0] = False
    assert calibrate_tissues(images, no_csf, _signal()) is None
    with pytest.raises(ValueError, match="images must be"):
        calibrate_tissues(images, pure[:, :2], _signal())
    with pytest.raises(ValueError, match="calibrated must name"):
        calibrate_tissues(images, pure, _signal(), calibrated=("bone",))


def test_calibrate_tissues_with_the_grey_matter_corner() -> None:
    """Given the segmentation, grey matter enters with its corner signal (exact on the noise-free
    phantom), and the MAP of all three tissues reads GM and WM within 4 %, where from CSF and WM
    alone GM is the prior's pull (more than 4 % off); without a corner (a single contrast) it falls
    back to CSF and WM."""
    f, maps, mask = _phantom(120)  # the corner needs 5000 GM pixels
    scales = torch.tensor([[2.0, 0.5, 1.5]], dtype=torch.float64)
    images = _physical_images(f, scales)
    weights, pure = segment_tissues(maps, mask)
    cal = calibrate_tissues(images, pure, _signal(), weights=weights, mask=mask)
    assert cal is not None and cal.calibrated == ("csf", "gm", "wm") and cal.present is not None
    # the corner in T1w and FLAIR, where CSF is dark; in T2w (CSF 4.6 times WM) unmixed: all exact
    assert bool(cal.present.all())
    torch.testing.assert_close(cal.signals[1], scales[0] * _tissue_signals(TRUTH)[0, 1], rtol=1e-9, atol=0)
    without = calibrate_tissues(images, pure, _signal())
    assert without is not None
    error = (cal.values / TRUTH - 1).abs()
    assert float(error[1:].max()) < 0.04 < float((without.values[1] / TRUTH[1] - 1).abs().max())
    single = calibrate_tissues(images, pure, _signal(), torch.tensor([True, False, False]), weights=weights, mask=mask)
    assert single is not None and single.calibrated == ("csf", "wm")
    f_small, maps_small, mask_small = _phantom(40)  # 1600 pixels: too few for the corner's quantiles
    w_small, pure_small = segment_tissues(maps_small, mask_small)
    cut = calibrate_tissues(_physical_images(f_small, scales), pure_small, _signal(), weights=w_small, mask=mask_small)
    assert cut is not None and cut.calibrated == ("csf", "wm")
    with pytest.raises(ValueError, match="both weights and mask"):
        calibrate_tissues(images, pure, _signal(), weights=weights)


def test_tissue_shift_moves_csf_and_wm_to_the_calibration_and_keeps_grey_matter() -> None:
    f, maps, mask = _phantom()
    biased = maps * torch.tensor([1.0, 1.12, 1.05], dtype=torch.float64).view(1, 3, 1, 1)  # a network's bias
    weights, pure = segment_tissues(biased, mask)
    cal = calibrate_tissues(_physical_images(f, torch.ones(1, 3, dtype=torch.float64)), pure, _signal())
    shift = tissue_shift(biased, weights, pure, cal, mask)
    p = biased.clone().requires_grad_(True)
    moved = shift(p, mask)
    for k in (0, 2):  # medians of the pure CSF / WM pixels take the calibrated values
        torch.testing.assert_close(moved[0, :, pure[0, k]].median(-1).values, cal.values[k], rtol=1e-9, atol=0)
    gm = pure[0, 1]
    torch.testing.assert_close(moved[0, :, gm].detach(), biased[0, :, gm])  # grey matter keeps its level
    order = biased[0, 1].flatten().argsort()
    assert bool((moved[0, 1].flatten()[order].diff() >= -1e-12).all())  # T1 stays monotone
    moved.sum().backward()
    assert p.grad is not None and bool(torch.isfinite(p.grad).all())
    outside = mask.clone()
    outside[0, :, :3] = False
    torch.testing.assert_close(shift(biased, outside)[..., :3], biased[..., :3])  # outside the mask unchanged
    with pytest.raises(ValueError, match="plateau"):
        tissue_shift(biased, weights, pure, cal, mask, plateau=1.0)


def _mni_fractions(n_slices: int, size: int | None) -> torch.Tensor:
    """``(S, K, size, size)`` CSF, GM, WM fractions of ``n_slices`` MNI152 test slices, area-resampled;
    with ``size`` None on the template's own 1 mm grid ``(S, K, 233, 197)``."""
    anatomy = load_anatomy("mni152", "test")
    idx = torch.linspace(0, anatomy.n_slices - 1, n_slices).round().long()
    fr = anatomy.fractions[[anatomy.class_names.index(c) for c in CALIBRATION_CLASSES]][:, idx].transpose(0, 1).double()
    if size is None:
        return fr
    n = max(fr.shape[-2:])
    fr = torch.nn.functional.pad(fr, (0, n - fr.shape[-1], 0, n - fr.shape[-2]))
    return torch.nn.functional.interpolate(fr, size=(size, size), mode="area")


def _textbook_signals(t2w_te: float = 0.11) -> torch.Tensor:
    """``(K, T)`` pure-tissue signals of :data:`TRUTH` in spin-echo T1w / T2w and inversion-recovery
    FLAIR of :data:`PROTOCOL` (another T2w echo time ``t2w_te`` [s]), from the textbook forms with
    the refocusing term ``exp(−(TR − TE/2)/T1)`` (W2Q's own models omit it)."""
    (tr1, te1), (tr2, te2), (tr3, te3, ti3) = (0.55, 0.012), (5.0, t2w_te), (9.0, 0.12, 2.4)
    pd, t1, t2 = TRUTH.T  # (K,) each

    def se(tr: float, te: float) -> torch.Tensor:
        return pd * (1 - 2 * torch.exp(-(tr - te / 2) / t1) + torch.exp(-tr / t1)) * torch.exp(-te / t2)

    flair = (pd * (1 - 2 * torch.exp(-ti3 / t1) + 2 * torch.exp(-(tr3 - te3 / 2) / t1) - torch.exp(-tr3 / t1))
             * torch.exp(-te3 / t2)).abs()
    return torch.stack([se(tr1, te1), se(tr2, te2), flair], 1)


def _textbook_images(fractions: torch.Tensor, scales: torch.Tensor, g: torch.Generator,
                     noise: float = 0.005, t2w_te: float = 0.11) -> torch.Tensor:
    """Images ``(S, 3, Y, X)`` of :func:`_textbook_signals` with physical partial volumes, one scale
    per contrast and Rician noise of ``noise`` times each contrast's mean brain signal."""
    clean = torch.einsum("skyx,kt->styx", fractions, _textbook_signals(t2w_te))
    mask = fractions.sum(1) >= 0.5
    level = (clean * mask[:, None]).sum((0, 2, 3)) / mask.sum()
    sigma = (noise * level * scales)[None, :, None, None]
    noisy = clean * scales[None, :, None, None]
    return torch.hypot(noisy + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64),
                       sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64))


def test_grey_matter_enters_without_the_contrasts_where_csf_is_too_bright(monkeypatch: pytest.MonkeyPatch) -> None:
    """MNI152 at 1 mm (every cortical pixel holds some CSF), textbook signals, T2w echo times 0.11
    and 0.40 s (CSF 5 and 240 times as bright as WM). At 0.40 s grey matter enters with T1w and
    FLAIR only, where the corner of all three contrasts reads its T2w signal more than 10 % high
    (measured +18 %); at 0.11 s its T2w signal is unmixed, within 1.5 % (+0.8 %). GM and WM values
    within 4 % either way."""
    f = _mni_fractions(4, None)
    mask = f.sum(1) >= 0.5
    scales = torch.tensor([1.7, 0.6, 3.1], dtype=torch.float64)

    def grey(te: float) -> tuple[TissueCalibration, torch.Tensor]:
        protocol = PROTOCOL.clone()
        protocol[0, 1, 1] = te
        images = _textbook_images(f, scales, torch.Generator().manual_seed(3), t2w_te=te)
        cal = calibrate_tissues(images, f > 0.95, MultiContrastSignal(protocol, TYPES), weights=f, mask=mask)
        assert cal is not None and cal.calibrated == ("csf", "gm", "wm") and cal.present is not None
        return cal, cal.signals[1] / (scales * _textbook_signals(te)[1]) - 1

    (short, short_error), (long, _) = grey(0.11), grey(0.40)
    assert short.present[1].tolist() == [True, True, True] and float(short_error.abs().max()) < 0.015
    assert long.present[1].tolist() == [True, False, True] and float(long.signals[1, 1]) == 0.0
    for cal in (short, long):
        assert float((cal.values[1:] / TRUTH[1:] - 1).abs().max()) < 0.04
    monkeypatch.setattr(calibration, "CORNER_CSF_RATIO", math.inf)
    every, every_error = grey(0.40)
    assert bool(every.present[1].all()) and float(every_error[1]) > 0.10


def test_shipped_w2q_with_the_calibration_reads_white_matter_closer_to_the_truth() -> None:
    """MNI152 test slices, images from textbook signal equations (not W2Q's), literature values: the
    calibration brings the pure-WM T1 within 5 % where the network alone reads it about 9 % high,
    keeps grey matter within 6 %, and does not depend on the receiver gain of any contrast."""
    model, config, _ = load_w2q(SHIPPED_WEIGHTS, require_trained=True)
    model = model.double().eval()
    fr = _mni_fractions(4, 64)
    mask = fr.sum(1) >= 0.5
    scales = torch.tensor([1.7, 0.6, 3.1], dtype=torch.float64)
    images = _textbook_images(fr, scales, torch.Generator().manual_seed(1))
    available = torch.ones(3, dtype=torch.bool)

    def run(x: torch.Tensor, calibrate: bool = True) -> tuple[torch.Tensor, TissueCalibration | None]:
        maps, _, cal = map_volume(model, config.image_size, x.transpose(0, 1), mask, PROTOCOL[0], TYPES[0], available,
                                  progress=False, return_std=True, calibrate=calibrate)
        return maps.transpose(0, 1).double(), cal

    out, cal = run(images)
    assert cal is not None
    plain, _ = run(images, calibrate=False)
    wm, gm = fr[:, 2] > 0.95, fr[:, 1] > 0.95
    err = {name: {t: float(p[:, 1][roi].mean()) / float(TRUTH[k, 1]) - 1 for t, (roi, k) in
                  {"wm": (wm, 2), "gm": (gm, 1)}.items()} for name, p in (("network", plain), ("calibrated", out))}
    assert abs(err["calibrated"]["wm"]) < 0.05 < abs(err["network"]["wm"]), err
    assert abs(err["calibrated"]["gm"]) < 0.06, err
    gain = torch.tensor([5.0, 0.3, 1.0], dtype=torch.float64)[None, :, None, None]
    again, cal2 = run(images * gain)
    torch.testing.assert_close(cal2.scales, cal.scales * gain.flatten(), rtol=1e-3, atol=0)
    assert float(((again - out).abs() / out.clamp_min(1e-3))[mask[:, None].expand_as(out)].max()) < 1e-2
    assert math.isfinite(float(out.sum()))


def test_the_tissue_points_follow_the_mode_not_a_one_sided_tail() -> None:
    """40 % of a class's pixels sit at 1 ± 0.01, 60 % trail off to 3 (partial volumes with a brighter
    tissue): the point is the cluster, where the median would be in the tail."""
    g = torch.Generator().manual_seed(0)
    z = torch.cat([1 + 0.01 * torch.randn(2, 400, generator=g, dtype=torch.float64),
                   1 + 2 * torch.rand(2, 600, generator=g, dtype=torch.float64)], 1)
    from pinqi.w2q.segmentation import _centre

    assert float((_centre(z) - 1).abs().max()) < 0.05 < float((z.median(-1).values - 1).abs().min())


def test_fat_beyond_the_white_matter_point_is_not_pure_white_matter() -> None:
    """A band of fat (T1 0.37 s, T2 80 ms) inside a loose mask unmixes to a white-matter weight of about
    5: it must not count as pure white matter, or its bright signals would set the WM medians."""
    f, maps, mask = _phantom(48)
    fat = maps.clone()
    fat[..., 42:] = torch.tensor([0.9, 0.37, 0.08], dtype=torch.float64).view(1, 3, 1, 1)  # the WM band's end
    weights, pure = segment_tissues(fat, mask)
    assert float(weights[0, 2, :, 42:].min()) > 3  # the fat's weight: far beyond the WM point
    assert not bool(pure[0, 2, :, 42:].any())
    torch.testing.assert_close(pure[0, 2, :, :41], segment_tissues(maps, mask)[1][0, 2, :, :41])  # WM as without fat
