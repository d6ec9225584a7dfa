"""The scale-identifiability bound: the truth is feasible, the common scale is exactly degenerate
(its feasible range is the closed-form intersection of the PD ranges), relative scales are seen
by the partial-volume pixels, and narrow tissue ranges pin everything down."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import w2q_scale_bound as bound
from simulation.tissues import TissueRange

NAMES = ("csf", "gm", "wm")
VALUES = torch.tensor([[0.95, 3.0, 1.6], [0.85, 1.6, 0.1], [0.7, 1.1, 0.08]], dtype=torch.float64)  # PD, T1, T2
SEQ = torch.tensor([[0.5, 0.012, 0.0, 90.0], [5.0, 0.1, 0.0, 90.0], [9.0, 0.12, 2.4, 90.0]], dtype=torch.float64)
TYPES = torch.tensor([0, 0, 2])  # spin echo T1w, spin echo T2w, FLAIR
SCALE = torch.ones(3, dtype=torch.float64)


@pytest.fixture(scope="module")
def fractions() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    f = torch.rand(3, 40, generator=g, dtype=torch.float64) ** 3
    f[:, :3] = torch.eye(3, dtype=torch.float64)  # one pure pixel per tissue
    return f / f.sum(0)


def test_common_scale_is_degenerate_and_bounded_by_the_pd_ranges(fractions: torch.Tensor) -> None:
    t = torch.linspace(-0.3, 0.3, 61, dtype=torch.float64)
    grid = t[:, None].expand(-1, 3).contiguous()
    low = bound.scale_posterior(fractions, NAMES, VALUES, SEQ, TYPES, SCALE, 0.005, grid)
    flat = bound.scale_posterior(fractions, NAMES, VALUES, SEQ, TYPES, SCALE, math.inf, grid)
    # scaling all contrasts alike is absorbed by PD alone: the images do not change at all
    torch.testing.assert_close(low.weights, flat.weights)
    # feasible a: PD_k / a inside every tissue's PD range
    from simulation.tissues import TISSUE_RANGES

    lo = max(float(VALUES[k, 0]) / TISSUE_RANGES[n].pd[1] for k, n in enumerate(NAMES))
    hi = min(float(VALUES[k, 0]) / TISSUE_RANGES[n].pd[0] for k, n in enumerate(NAMES))
    a = t.exp()
    assert torch.equal(low.weights > 0, (a >= lo * (1 - 1e-9)) & (a <= hi * (1 + 1e-9)))
    # T1 and T2 do not move along this direction; PD does
    assert float(low.spread["t1"].max()) < 1e-6 and float(low.spread["t2"].max()) < 1e-6
    assert float(low.spread["pd"].min()) > 1.0 and low.psnr["pd"] < 40


def test_partial_volume_pixels_reveal_a_relative_scale(fractions: torch.Tensor) -> None:
    wide = {n: TissueRange(t1=(0.05, 10.0), t2=(0.005, 5.0), pd=(0.05, 2.0)) for n in NAMES}
    grid = torch.tensor([[0.0, 0.0, 0.0], [math.log(1.02), 0.0, 0.0]], dtype=torch.float64)
    flat = bound.scale_posterior(fractions, NAMES, VALUES, SEQ, TYPES, SCALE, math.inf, grid, ranges=wide)
    low = bound.scale_posterior(fractions, NAMES, VALUES, SEQ, TYPES, SCALE, 0.005, grid, ranges=wide)
    # both points explain the pure tissues; without the mixed pixels only the Jacobian tells them apart
    assert float(flat.weights.min()) > 0.2
    assert float(low.weights[1] / low.weights[0]) < 1e-3


def test_narrow_tissue_ranges_pin_the_maps_down(fractions: torch.Tensor) -> None:
    narrow = {n: TissueRange(t1=(float(v[1]) * 0.999, float(v[1]) * 1.001), t2=(float(v[2]) * 0.999, float(v[2]) * 1.001),
                             pd=(float(v[0]) * 0.999, float(v[0]) * 1.001)) for n, v in zip(NAMES, VALUES)}
    grid = bound.scale_grid(torch.zeros(3), torch.full((3,), 0.05), 11)
    post = bound.scale_posterior(fractions, NAMES, VALUES, SEQ, TYPES, SCALE, math.inf, grid, ranges=narrow)
    assert float(post.weights[-1]) > 0  # the truth (last row) is feasible
    assert min(post.psnr.values()) > 50 and max(post.mape.values()) < 0.2


def test_report_end_to_end_on_a_small_grid(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    original = bound.refined_posterior
    monkeypatch.setattr(bound, "refined_posterior", lambda *a, **k: original(*a, n_coarse=7, n_fine=5, **k))
    bound.main(["--n-slices", "1", "--per-slice", "1", "--image-size", "16", "--pd-per-slice", "3", "--no-write"])
    out = capsys.readouterr().out
    assert "| prior only | PD |" in out and "| with partial volumes, noise 0.5 % | T1 |" in out
    assert "PD along the common-scale direction alone" in out and "3 further draws" in out


def test_common_scale_bound_matches_quadrature_on_a_narrow_interval(fractions: torch.Tensor) -> None:
    # CSF PD 0.905 and WM PD 0.89 leave α in [0.989, 1.0056]: a few points of a coarse grid
    values = VALUES.clone()
    values[0, 0], values[2, 0] = 0.905, 0.89
    from simulation.tissues import TISSUE_RANGES

    lo = max(float(values[k, 0]) / TISSUE_RANGES[n].pd[1] for k, n in enumerate(NAMES))
    hi = min(float(values[k, 0]) / TISSUE_RANGES[n].pd[0] for k, n in enumerate(NAMES))
    assert hi / lo < 1.02
    # posterior over t = ln α: |det ∂q/∂v| ∝ PD'² per tissue and Π_c a_c = α³, so ∝ α^(2 - 3) per tissue
    t = torch.linspace(math.log(lo), math.log(hi), 100_001, dtype=torch.float64)
    w = torch.exp(-len(NAMES) * t)
    w = w / w.sum()
    shrink = torch.exp(-t)  # the truth's PD is PD / α: the error of the posterior mean is a global factor
    error = (shrink - (w * shrink).sum()).abs()
    pd = values[:, 0] @ fractions
    expected = float((w * 20 * torch.log10(pd.max() * shrink / (pd.square().mean().sqrt() * error))).sum())
    post = bound.common_scale_posterior(fractions, NAMES, values, SEQ, TYPES, SCALE)
    assert abs(post.psnr["pd"] - expected) < 0.3, (post.psnr["pd"], expected)
