"""reconstruct(): raw file in, maps out — phantom through an ISMRMRD round trip, any scale, times checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from operators import MultiCoilCartesianOp, simulate_coil_maps, variable_density_mask
from pinqi import PINQI, PINQIConfig
from pinqi.io import read_raw, write_ismrmrd
from pinqi.reconstruction import check_times_match, reconstruct
from simulation import SaturationRecovery
from simulation.tube_phantom import TABLE_I_T1, tube_phantom

TIMES = torch.tensor([0.5, 1.0, 1.5, 2.0, 8.0])


def _raw_file(tmp_path: Path, acceleration: float, scale: complex = 1.0, size: int = 48) -> tuple[Path, object]:
    g = torch.Generator().manual_seed(4)
    ph = tube_phantom(size, generator=g)
    csm = simulate_coil_maps(6, (size, size), object_mask=ph.object_mask, generator=g)
    mask = variable_density_mask(5, (size, size), acceleration=acceleration, n_center=12, generator=g).bool()
    k = MultiCoilCartesianOp(csm[None], mask[None])(SaturationRecovery(TIMES)(ph.params[None]))[0]
    k = k + 1e-3 * torch.randn(k.shape, dtype=k.dtype, generator=g) * mask[:, None]
    path = write_ismrmrd(tmp_path / "scan.h5", k * scale, mask, TIMES)
    return path, ph


def _tube_rms_ms(t1: torch.Tensor, ph) -> float:
    means = torch.stack([t1[roi].mean() for roi in ph.rois])
    return float((means - torch.tensor(TABLE_I_T1)).square().mean().sqrt()) * 1e3


def test_cg_sense_fit_of_a_fully_sampled_phantom_recovers_the_tubes(tmp_path: Path):
    path, ph = _raw_file(tmp_path, acceleration=1)
    result = reconstruct(read_raw(path), baseline="cg-sense")
    assert result.t1.shape == (1, 48, 48) and result.method == "CG-SENSE + fit"
    assert _tube_rms_ms(result.t1[0], ph) < 10.0


@pytest.mark.parametrize("scale", [1e-5, 3e4j])
def test_any_scale_gives_the_same_t1(tmp_path: Path, scale: complex):
    ref_path, ph = _raw_file(tmp_path, acceleration=4)
    ref = reconstruct(read_raw(ref_path), baseline="cg-sense")
    (tmp_path / "other").mkdir()
    path, _ = _raw_file(tmp_path / "other", acceleration=4, scale=scale)
    out = reconstruct(read_raw(path), baseline="cg-sense")
    inside = ph.object_mask[None]
    assert torch.allclose(out.r1[inside], ref.r1[inside], rtol=2e-3)


def test_pinqi_runs_and_refuses_other_times(tmp_path: Path):
    path, _ = _raw_file(tmp_path, acceleration=4)
    raw = read_raw(path)
    config = PINQIConfig(n_iterations=1, image_features=(4, 8), parameter_features=(4, 8), cg_max_iter=10, fit_max_iter=5)
    model = PINQI(SaturationRecovery(TIMES), config).eval()
    calls = []
    result = reconstruct(raw, model, progress=lambda done, total: calls.append((done, total)))
    assert result.m0.shape == (1, 48, 48) and calls == [(1, 1)]
    assert torch.isfinite(result.r1).all()
    other = PINQI(SaturationRecovery(torch.tensor([0.3, 0.6, 1.0, 2.0, 5.0])), config).eval()
    with pytest.raises(ValueError, match=r"trained with saturation times \[0.3, 0.6, 1.0, 2.0, 5.0\] s; the data have"):
        reconstruct(raw, other)


def test_check_times_match_names_both_sets():
    check_times_match(TIMES, TIMES + 1e-4)
    with pytest.raises(ValueError, match=r"\[0.5, 1.0\] s; the data have \[0.5, 1.0, 2.0\] s"):
        check_times_match(torch.tensor([0.5, 1.0]), torch.tensor([0.5, 1.0, 2.0]))


def test_the_model_based_fit_runs_only_on_prewhitened_data_with_the_automatic_strength(tmp_path: Path):
    """A file with noise scans (unit whitened noise): the fit runs and brings the maps to the noise level; a
    file without them, or a fixed prior strength: it does not, and the header says why."""
    from pinqi.io.examples import write_example_scan
    from pinqi.model_based import DISCREPANCY_TAU, noise_energy
    from pinqi.training import load_pinqi

    model = load_pinqi()
    scan = write_example_scan(tmp_path / "phantom.h5", "phantom", size=48, n_coils=6, acceleration=6.0, seed=2)
    raw = read_raw(scan.path)
    result = reconstruct(raw, model)
    assert result.header["model_based_fit"].startswith("run to the noise level")

    def misfit(r) -> float:
        predicted = MultiCoilCartesianOp(r.csm, raw.mask)(SaturationRecovery(raw.times.float())(
            torch.stack([r.m0.real, r.m0.imag, r.r1], 1)).to(raw.kspace.dtype))
        return float((predicted - raw.kspace).abs().square().sum())

    physics = reconstruct(raw, model, prior_strength=0.0)  # where the fit starts when the priors were cut back
    assert result.header["prior_strength"] != [1.0]
    assert misfit(result) < 0.8 * misfit(physics)
    assert misfit(physics) > DISCREPANCY_TAU * noise_energy(raw.mask, raw.n_coils, 0.5**0.5)
    assert reconstruct(raw, model, prior_strength=1.0).header["model_based_fit"] == "not run: fixed prior strength"
    path, _ = _raw_file(tmp_path, acceleration=4)  # written without noise scans
    header = reconstruct(read_raw(path), model).header
    assert header["model_based_fit"] == "not run: no noise scans, so the noise level is unknown"
