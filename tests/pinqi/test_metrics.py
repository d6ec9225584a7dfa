"""Tests of pinqi.metrics: nrmse, mae and the masked 7x7-uniform-window SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pinqi.metrics import mae, nrmse, psnr, ssim


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny problems: one thread is faster and avoids oversubscribing shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random(shape, seed=0, dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _reference_ssim(pred, target, mask, window=7, data_range=None, k1=0.01, k2=0.03):
    """Plain loops over every window position; windows with a pixel outside the mask are skipped."""
    pred, target, mask = (np.asarray(a, dtype=np.float64) for a in (pred, target, mask))
    mask = mask.astype(bool)
    if data_range is None:
        data_range = target[mask].max() - target[mask].min()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    values = []
    ny, nx = pred.shape
    for i in range(ny - window + 1):
        for j in range(nx - window + 1):
            if not mask[i : i + window, j : j + window].all():
                continue
            a = pred[i : i + window, j : j + window].ravel()
            b = target[i : i + window, j : j + window].ravel()
            ma, mb = a.mean(), b.mean()
            va, vb = a.var(ddof=1), b.var(ddof=1)
            cov = ((a - ma) * (b - mb)).sum() / (a.size - 1)
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_nrmse_and_mae_hand_computed():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.ones(2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    # differences 0, 1, 2, 3; target norm² 4 (all) or 3 (masked)
    assert nrmse(pred, target).item() == pytest.approx(math.sqrt(14 / 4))
    assert nrmse(pred, target, mask).item() == pytest.approx(math.sqrt(5 / 3))
    assert mae(pred, target).item() == pytest.approx(1.5)
    assert mae(pred, target, mask).item() == pytest.approx(1.0)
    assert nrmse(pred, target).shape == () and nrmse(pred, target).dtype == torch.float32


def test_psnr_hand_computed():
    target = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    pred = target + torch.tensor([[0.0, 0.2], [-0.2, 5.0]])
    mask = torch.tensor([[True, True], [True, False]])
    # masked: peak 2, MSE (0 + 0.04 + 0.04) / 3
    assert psnr(pred, target, mask).item() == pytest.approx(20 * math.log10(2) - 10 * math.log10(0.08 / 3), rel=1e-6)
    assert psnr(target, target).item() == math.inf
    assert psnr(2 * pred, 2 * target, mask).item() == pytest.approx(psnr(pred, target, mask).item(), rel=1e-6)


def test_batched_per_sample_values_and_mask_forms():
    pred = torch.stack([torch.full((3, 3), 2.0), torch.full((3, 3), 4.0)])
    target = torch.ones(2, 3, 3)
    torch.testing.assert_close(nrmse(pred, target), torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(mae(pred, target), torch.tensor([1.0, 3.0]))
    pred[:, 0, 0] = 100.0  # only outside the mask
    mask_2d = torch.ones(3, 3, dtype=torch.bool)
    mask_2d[0, 0] = False
    expected = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(mae(pred, target, mask_2d), expected)  # (Y, X) mask for the batch
    torch.testing.assert_close(mae(pred, target, mask_2d.expand(2, 3, 3)), expected)
    torch.testing.assert_close(nrmse(pred, target, mask_2d.double()), expected)  # 0/1 real mask


def test_complex_maps_use_moduli():
    target = torch.tensor([[1 + 1j, 0 + 2j]], dtype=torch.complex64)
    pred = target + torch.tensor([[1j, -1.0]], dtype=torch.complex64)
    assert nrmse(pred, target).item() == pytest.approx(math.sqrt(2 / 6))
    assert mae(pred, target).dtype == torch.float32


def test_bad_inputs_raise_clear_errors():
    a = torch.ones(2, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        nrmse(a, torch.ones(2, 4, 5))
    with pytest.raises(ValueError, match="empty for sample"):
        mae(a, a, torch.zeros(4, 4, dtype=torch.bool))
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        nrmse(a, a, mask)
    with pytest.raises(ValueError, match="mask must have shape"):
        mae(a, a, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="only 0 and 1"):
        mae(a, a, torch.full((4, 4), 0.5))
    with pytest.raises(ValueError, match=r"\(Y, X\) or \(B, Y, X\)"):
        mae(torch.ones(4), torch.ones(4))
    with pytest.raises(TypeError, match="real"):
        ssim(a.to(torch.complex64), a.to(torch.complex64))
    with pytest.raises(ValueError, match="no 7x7 window"):
        ssim(_random((10, 10)), _random((10, 10), 1), torch.ones(10, 10).tril().bool())
    with pytest.raises(ValueError, match="data_range must be positive"):
        ssim(_random((8, 8)), torch.ones(8, 8))


def test_ssim_identical_is_one_and_decreases_with_noise():
    target = _random((2, 24, 24))
    mask = torch.zeros(24, 24, dtype=torch.bool)
    mask[3:20, 2:22] = True
    torch.testing.assert_close(ssim(target, target, mask), torch.ones(2, dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(target.shape, generator=g, dtype=torch.float64)
    values = [ssim(target + s * noise, target, mask) for s in (0.01, 0.05, 0.2, 1.0)]
    for better, worse in zip(values, values[1:]):
        assert (worse < better).all()
    assert values[-1].max() < 0.5


def test_ssim_matches_loop_reference():
    pred, target = _random((13, 15), 2), _random((13, 15), 3)
    pred = 0.6 * target + 0.4 * pred
    mask = torch.ones(13, 15, dtype=torch.bool)
    mask[:3, :4] = False
    mask[9:, 11:] = False
    mask[6, 7] = False
    assert ssim(pred, target, mask).item() == pytest.approx(_reference_ssim(pred, target, mask), rel=1e-10)
    assert ssim(pred, target).item() == pytest.approx(_reference_ssim(pred, target, torch.ones(13, 15)), rel=1e-10)
    got = ssim(pred, target, mask, window=5, data_range=2.0).item()
    assert got == pytest.approx(_reference_ssim(pred, target, mask, window=5, data_range=2.0), rel=1e-10)
    # float32 input: float64 computation, float32 result
    got32 = ssim(pred.float(), target.float(), mask)
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(_reference_ssim(pred, target, mask), rel=1e-5)


def test_ssim_ignores_windows_that_touch_pixels_outside_the_mask():
    target = _random((16, 20), 4)
    mask = torch.zeros(16, 20, dtype=torch.bool)
    mask[:, :10] = True
    pred = target.clone()
    pred[:, 10:] = _random((16, 10), 5)  # differs only outside the mask
    # every window fully inside the mask sees identical images
    assert ssim(pred, target, mask).item() == pytest.approx(1.0, abs=1e-12)
    # a window straddling the mask edge would see the difference
    assert ssim(pred[:, 4:14], target[:, 4:14]).item() < 0.9
    # moving the mask edge one column into the differing region brings such windows in
    wider = mask.clone()
    wider[:, 10] = True
    assert ssim(pred, target, wider).item() < 0.99


def test_ssim_gradcheck():
    pred = _random((1, 8, 8), 6).requires_grad_()
    target = _random((1, 8, 8), 7)
    assert torch.autograd.gradcheck(lambda p: ssim(p, target, window=3), (pred,))


# -- index by the mask (issue #13 item 5) -------------------------------------------------------
@pytest.mark.parametrize("metric", [nrmse, mae, psnr, ssim])
def test_values_outside_the_mask_cannot_poison_the_metric_or_its_gradient(metric):
    target = _random((2, 16, 16), seed=1) + 0.5
    pred = (target + 0.1 * _random((2, 16, 16), seed=2)).requires_grad_(True)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[2:14, 2:14] = True
    clean = metric(pred, target, mask)
    poisoned_pred = torch.where(mask, pred, torch.tensor(math.nan, dtype=torch.float64))
    poisoned_target = torch.where(mask, target, torch.tensor(math.inf, dtype=torch.float64))
    value = metric(poisoned_pred, poisoned_target, mask)
    torch.testing.assert_close(value, clean)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    assert torch.isfinite(grad).all() and (grad[:, ~mask] == 0).all()


@pytest.mark.parametrize("metric", [nrmse, mae, psnr, ssim])
def test_non_finite_values_inside_the_mask_are_refused(metric):
    target = _random((16, 16), seed=1) + 0.5
    pred = target.clone()
    pred[5, 5] = math.nan
    with pytest.raises(ValueError, match=r"pred has 1 NaN or inf value\(s\) inside the mask"):
        metric(pred, target)
    with pytest.raises(ValueError, match=r"the mask is empty"):
        metric(target, target, torch.zeros(16, 16, dtype=torch.bool))


def test_map_metrics_indexes_by_the_mask_and_refuses_nan_inside():
    from pinqi.metrics import map_metrics

    target = _random((1, 2, 8, 8), seed=3) + 0.5
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True
    pred = torch.where(mask[:, None], target * 1.1, torch.tensor(math.nan, dtype=torch.float64))
    out = map_metrics(pred, target, mask, ("a", "b"))
    assert out["a"]["mpe"] == pytest.approx(10.0)
    pred[0, 1, 3, 3] = math.inf
    with pytest.raises(ValueError, match="inside the mask"):
        map_metrics(pred, target, mask, ("a", "b"))
    with pytest.raises(ValueError, match="empty for every sample"):
        map_metrics(target, target, mask & False, ("a", "b"))
