"""The tissue-calibration MAP of ``benchmarks.w2q_calibration`` (the ideal-calibration reference)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.w2q_calibration import CALIBRATION_CLASSES, slice_dependence, solve_tissue_map
from pinqi.w2q.config import W2QConfig
from pinqi.w2q.model import W2Q
from pinqi.w2q.signal import MultiContrastSignal
from simulation.tissues import W2Q_TISSUE_PRIOR

#: csf, gm, wm (the order of CALIBRATION_CLASSES) as (PD, T1 [s], T2 [s]): 3 T literature values.
TRUTH = torch.tensor([[1.0, 4.0, 1.8], [0.8, 1.3, 0.09], [0.7, 0.85, 0.07]], dtype=torch.float64)
#: T1w spin echo TR 0.55 s, T2w spin echo TR 5 s TE 0.11 s, FLAIR TR 9 s TE 0.12 s TI 2.4 s.
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
    centre = torch.tensor([[(getattr(W2Q_TISSUE_PRIOR[c], p)[0] * getattr(W2Q_TISSUE_PRIOR[c], p)[1]) ** 0.5
                            for p in ("pd", "t1", "t2")] for c in CALIBRATION_CLASSES], dtype=torch.float64)
    torch.testing.assert_close(v0[0], centre, rtol=1e-6, atol=0)  # no data: the prior's (log-)centres
    with pytest.raises(ValueError, match="present must be"):
        solve_tissue_map(m, ones[:, :2], ones, _signal())


def test_slice_dependence_reports_every_slice_with_white_matter() -> None:
    torch.manual_seed(0)
    model = W2Q(W2QConfig(n_iterations=1, features=(8, 16), embed_dim=8, group_size=4, fit_max_iter=2,
                          protocol_version=2))
    rows = slice_dependence(model, n_slices=3, size=32)
    assert rows and all(n > 0 and t1 > 0 and 0.5 < ideal < 1.5 for _, n, t1, ideal in rows)


def test_generator_bias_of_a_constant_map() -> None:
    """A "model" that always returns WM T1 = 1.2 × 0.85 s reads about +20 % (the generator's smooth T1
    factors move the truth by up to ±10 %), per slice and pixel-weighted."""
    from types import SimpleNamespace

    from benchmarks.w2q_calibration import generator_bias
    from pinqi.w2q.config import load_w2q_config

    def constant(images, seq, types, mask):  # noqa: ANN001, ANN202
        p = torch.ones(images.shape[0], 3, *images.shape[-2:]) * torch.tensor([0.7, 1.02, 0.07]).view(1, 3, 1, 1)
        return SimpleNamespace(final=p)

    out = generator_bias(constant, load_w2q_config("micro").replace(image_size=32), n_samples=6)
    assert out["slices"] > 0
    assert 8 < out["per-slice mean %"] < 32 and 8 < out["pixel-weighted %"] < 32
