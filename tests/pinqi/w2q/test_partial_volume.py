"""The grey-matter corner of the partial-volume triangle (pinqi.w2q.partial_volume)."""

from __future__ import annotations

import pytest
import torch

from pinqi.w2q.partial_volume import grey_matter_signal, grey_matter_unmixed
from tests.pinqi.w2q.test_calibration import _mni_fractions, _textbook_images, _textbook_signals

#: Pure-tissue signals (K = csf, gm, wm; T = 3 contrasts), any positive vectors: the corner is geometry.
SIGNALS = torch.tensor([[0.20, 3.00, 0.05], [0.80, 0.90, 0.60], [1.00, 0.60, 0.50]], dtype=torch.float64)


def _fractions(n: int = 3000, seed: int = 0) -> torch.Tensor:
    """``(1, 3, 1, N)`` CSF/GM/WM fractions as a cortex at 1 mm has them: no pixel is pure GM (at most
    0.9), a third are GM/CSF mixtures, a third GM/WM mixtures, a third hold all three; plus pure CSF
    and pure WM pixels."""
    g = torch.Generator().manual_seed(seed)
    m = n // 3
    f_g = 0.5 + 0.4 * torch.rand(3 * m, generator=g, dtype=torch.float64)
    f_c = torch.cat([1 - f_g[:m], torch.zeros(m, dtype=torch.float64),
                     (0.01 + 0.04 * torch.rand(m, generator=g, dtype=torch.float64)) * (1 - f_g[2 * m:])])
    f = torch.stack([f_c, f_g, 1 - f_g - f_c], 0)
    pure = torch.eye(3, dtype=torch.float64)[:, [0, 2]].repeat_interleave(100, 1)  # 100 pure CSF, 100 pure WM
    return torch.cat([f, pure], 1)[None, :, None, :]


def _images(f: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
    images = torch.einsum("skyx,kt->styx", f, SIGNALS)
    return images if gain is None else images * gain[None, :, None, None]


def test_the_corner_is_the_pure_grey_matter_signal_without_any_pure_grey_matter_pixel() -> None:
    f = _fractions()
    mask = torch.ones(f.shape[0], *f.shape[2:], dtype=torch.bool)
    corner = grey_matter_signal(_images(f), f, mask, SIGNALS[0], SIGNALS[2], border=0, smooth=1, min_pixels=64)
    assert corner is not None
    torch.testing.assert_close(corner, SIGNALS[1], rtol=1e-9, atol=0)
    # the median over the most-GM pixels is what their CSF and WM make it
    most = f[0, 1, 0] > 0.85
    median = _images(f)[0, :, 0, most].median(-1).values
    assert float((median / SIGNALS[1] - 1).abs().max()) > 0.03
    # one gain per contrast: the corner follows
    gain = torch.tensor([3.0, 0.2, 7.0], dtype=torch.float64)
    again = grey_matter_signal(_images(f, gain), f, mask, SIGNALS[0] * gain, SIGNALS[2] * gain, border=0,
                               smooth=1, min_pixels=64)
    assert again is not None
    torch.testing.assert_close(again, SIGNALS[1] * gain, rtol=1e-9, atol=0)


def test_the_corner_in_two_contrasts_and_when_it_cannot_be_placed() -> None:
    f = _fractions()
    mask = torch.ones(f.shape[0], *f.shape[2:], dtype=torch.bool)
    images = _images(f)
    two = grey_matter_signal(images, f, mask, SIGNALS[0], SIGNALS[2], torch.tensor([True, False, True]), border=0,
                             smooth=1, min_pixels=64)
    assert two is not None
    torch.testing.assert_close(two[[0, 2]], SIGNALS[1, [0, 2]], rtol=1e-9, atol=0)
    assert float(two[1]) == 0.0
    one = torch.tensor([False, True, False])
    assert grey_matter_signal(images, f, mask, SIGNALS[0], SIGNALS[2], one, border=0, smooth=1, min_pixels=64) is None
    # CSF = WM: no plane
    assert grey_matter_signal(images, f, mask, SIGNALS[0], SIGNALS[0], border=0, smooth=1, min_pixels=64) is None
    assert grey_matter_signal(images, f, mask, SIGNALS[0], SIGNALS[2], border=0, smooth=1) is None  # 3000 < 5000 pixels
    # the mask's border holds background: with a one-row volume nothing is left inside it
    assert grey_matter_signal(images, f, mask, SIGNALS[0], SIGNALS[2], min_pixels=64) is None
    with pytest.raises(ValueError, match="weights"):
        grey_matter_signal(images, f[:, :2], mask, SIGNALS[0], SIGNALS[2])
    with pytest.raises(ValueError, match="csf and wm"):
        grey_matter_signal(images, f, mask, SIGNALS[0, :2], SIGNALS[2])
    with pytest.raises(ValueError, match="quantile"):
        grey_matter_signal(images, f, mask, SIGNALS[0], SIGNALS[2], quantile=0.5)
    with pytest.raises(ValueError, match="smooth"):
        grey_matter_signal(images, f, mask, SIGNALS[0], SIGNALS[2], border=0)  # a 3 x 3 box needs a border of 1


def test_the_corner_on_the_mni152_cortex_at_1_mm_with_textbook_signals_and_noise() -> None:
    """The MNI152 template's own tissue fractions at 1 mm (every cortical pixel holds some CSF),
    spin-echo T1w/T2w and inversion-recovery FLAIR from the textbook equations, literature values,
    unknown gains, Rician noise. At 0.5 % the corner is within 1.5 % of the pure GM signal in every
    contrast (measured 0.1–0.8 %), where the median over the pixels of more than 95 % GM reads the
    T2w signal more than 2 % high (3.1 %). At 2 % noise the 3 × 3 average keeps it within 1.5 %
    (1.0 %), where the corner of the unaveraged images is more than 3 % off (FLAIR 5.5 %)."""
    f = _mni_fractions(4, None)
    mask = f.sum(1) >= 0.5
    scales = torch.tensor([1.7, 0.6, 3.1], dtype=torch.float64)
    pure = scales * _textbook_signals()  # (K, T)

    def error(level: float, smooth: int) -> tuple[float, torch.Tensor]:
        images = _textbook_images(f, scales, torch.Generator().manual_seed(3), noise=level)
        pooled = images.transpose(0, 1)
        csf, wm = (pooled[:, f[:, k] > 0.95].median(-1).values for k in (0, 2))
        corner = grey_matter_signal(images, f, mask, csf, wm, smooth=smooth)
        assert corner is not None
        return float((corner / pure[1] - 1).abs().max()), pooled[:, f[:, 1] > 0.95].median(-1).values / pure[1] - 1

    low, median = error(0.005, 3)
    assert low < 0.015 and float(median[1]) > 0.02
    assert error(0.02, 3)[0] < 0.015
    assert error(0.02, 1)[0] > 0.03


def test_the_unmixed_grey_matter_signal_removes_each_pixels_csf_where_the_corner_cannot() -> None:
    """With the pure signals known in two contrasts, each GM pixel's fractions follow from those two,
    and its signal in the third, its CSF and WM removed, is the pure GM signal: exact when every GM
    pixel holds at least 1 % CSF, where the corner of all three contrasts is off in the contrast in
    which CSF is bright (here 3 times GM: more than 1 %)."""
    f = _fractions()
    f_c, f_g = f[0, 0, 0].clone(), f[0, 1, 0].clone()
    floor = (f_g > 0) & (f_c < 0.01)  # no GM pixel free of CSF, as in the MNI152 cortex
    f[0, 0, 0] = torch.where(floor, torch.full_like(f_c, 0.01), f_c)
    f[0, 1, 0] = torch.where(floor, f_g - (0.01 - f_c), f_g)
    mask = torch.ones(f.shape[0], *f.shape[2:], dtype=torch.bool)
    images = _images(f)
    known = torch.tensor([True, False, True])
    kwargs = dict(border=0, smooth=1, min_pixels=64)
    corner = grey_matter_signal(images, f, mask, SIGNALS[0], SIGNALS[2], **kwargs)
    assert corner is not None and float((corner[1] / SIGNALS[1, 1] - 1).abs()) > 0.01
    tissues = SIGNALS.clone()
    tissues[1, 1] = 0.0  # unknown in the unmixed contrast: not used
    whole = grey_matter_unmixed(images, f, mask, tissues, known, **kwargs)
    assert whole is not None
    torch.testing.assert_close(whole, SIGNALS[1], rtol=1e-9, atol=0)
    # one gain per contrast: it follows
    gain = torch.tensor([3.0, 0.2, 7.0], dtype=torch.float64)
    again = grey_matter_unmixed(_images(f, gain), f, mask, SIGNALS * gain, known, **kwargs)
    assert again is not None
    torch.testing.assert_close(again, SIGNALS[1] * gain, rtol=1e-9, atol=0)
    # an unavailable contrast stays zero; nothing to unmix returns the known signals
    none_left = grey_matter_unmixed(images, f, mask, SIGNALS, known, available=known, **kwargs)
    assert none_left is not None and none_left.tolist() == [float(SIGNALS[1, 0]), 0.0, float(SIGNALS[1, 2])]
    # fewer than two known contrasts, too few pixels, a singular unmixing: None
    assert grey_matter_unmixed(images, f, mask, SIGNALS, torch.tensor([True, False, False]), **kwargs) is None
    assert grey_matter_unmixed(images, f, mask, SIGNALS, known, border=0, smooth=1) is None
    flat = SIGNALS.clone()
    flat[:, 2] = flat[:, 0]  # the two known contrasts say the same about every tissue
    assert grey_matter_unmixed(images, f, mask, flat, known, **kwargs) is None
    with pytest.raises(ValueError, match="tissues must be"):
        grey_matter_unmixed(images, f, mask, SIGNALS[:2], known, **kwargs)
    with pytest.raises(ValueError, match="smooth"):
        grey_matter_unmixed(images, f, mask, SIGNALS, known, border=0)
