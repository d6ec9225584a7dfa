"""The model-based fit stopped at the noise level (:mod:`pinqi.model_based`)."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from operators import MultiCoilCartesianOp, simulate_coil_maps, variable_density_mask
from pinqi.model_based import DISCREPANCY_TAU, model_based_fit, noise_energy
from simulation import SaturationRecovery

TIMES = torch.tensor([0.5, 1.0, 2.0, 8.0])


def _problem(noise: float = 0.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = SaturationRecovery(TIMES)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    truth = torch.stack([1 + 0.2 * xx, 0.3 * yy, 1.0 + 0.5 * (xx * yy + 1)])[None]  # (Re M0, Im M0, R1 [1/s])
    csm = simulate_coil_maps(4, (16, 16), generator=g)[None]
    mask = variable_density_mask(len(TIMES), (16, 16), acceleration=2, generator=g)[None]
    op = MultiCoilCartesianOp(csm, mask)
    clean = op(q(truth))
    k = clean + noise * torch.randn(clean.shape, dtype=clean.dtype, generator=g) * mask[:, :, None]
    return k, op, q, truth, mask


def test_converges_on_clean_data_without_a_noise_level() -> None:
    k, op, q, truth, mask = _problem()
    fitted, iterations = model_based_fit(k, op, q, truth * torch.tensor([1.0, 1.0, 1.2]).view(1, 3, 1, 1), None, mask,
                                         max_iter=200)
    assert iterations == 200
    assert float((fitted[:, 2] / truth[:, 2] - 1).abs().max()) < 2e-2  # from 20 % off, in float32


def test_stops_at_the_noise_level_and_keeps_maps_already_there() -> None:
    sigma = 0.02
    k, op, q, truth, mask = _problem(noise=sigma * math.sqrt(2))  # complex randn: σ per part = noise / √2
    start = truth * torch.tensor([1.0, 1.0, 1.3]).view(1, 3, 1, 1)
    target = DISCREPANCY_TAU * noise_energy(mask, k.shape[2], sigma)
    fitted, iterations = model_based_fit(k, op, q, start, sigma, mask)
    misfit = float((op(q(fitted)) - k).abs().square().sum())
    assert 0 < iterations < 300 and misfit <= target
    before = float((op(q(start)) - k).abs().square().sum())
    assert before > 3 * target  # it had work to do, and stopped, not converged into the noise
    # maps already at the noise level come back unchanged
    same, none = model_based_fit(k, op, q, fitted, sigma, mask)
    assert none == 0 and same is fitted


@pytest.mark.parametrize("scale", [1e-3, 7.0 * cmath.exp(2j), 1e4j])
def test_follows_any_scale_and_phase_of_the_data(scale: complex) -> None:
    """k → a·k (and σ → |a|σ): M0 → a·M0, R1 unchanged."""
    sigma = 0.02
    k, op, q, truth, mask = _problem(noise=sigma * math.sqrt(2), seed=1)
    start = truth * torch.tensor([1.0, 1.0, 1.3]).view(1, 3, 1, 1)
    ref, _ = model_based_fit(k, op, q, start, sigma, mask)
    m0 = torch.complex(start[:, 0], start[:, 1]) * scale
    scaled_start = torch.stack([m0.real, m0.imag, start[:, 2]], 1)
    out, _ = model_based_fit(k * scale, op, q, scaled_start, sigma * abs(scale), mask)
    torch.testing.assert_close(out[:, 2], ref[:, 2], rtol=2e-3, atol=1e-4)
    torch.testing.assert_close(torch.complex(out[:, 0], out[:, 1]) / scale, torch.complex(ref[:, 0], ref[:, 1]),
                               rtol=2e-3, atol=1e-4)


def test_bad_input_is_refused() -> None:
    k, op, q, truth, mask = _problem()
    with pytest.raises(ValueError, match=r"kspace must be \(1, T, C, Y, X\)"):
        model_based_fit(k[0], op, q, truth, 0.1, mask)
    with pytest.raises(ValueError, match="noise_sigma must be > 0"):
        model_based_fit(k, op, q, truth, 0.0, mask)


def test_stops_when_model_error_keeps_the_noise_level_out_of_reach() -> None:
    """Saturation times 30 % off in the fit's signal model: no (M0, R1) explains the data to the noise
    level; the fit stops once its misfit stalls instead of running all its iterations into the noise."""
    sigma = 0.001
    k, op, q, truth, mask = _problem(noise=sigma * math.sqrt(2), seed=2)
    wrong = SaturationRecovery(TIMES * 1.3)
    fitted, iterations = model_based_fit(k, op, wrong, truth, sigma, mask, max_iter=300)
    assert 0 < iterations < 300
    assert float((op(wrong(fitted)) - k).abs().square().sum()) > DISCREPANCY_TAU * noise_energy(mask, k.shape[2], sigma)
