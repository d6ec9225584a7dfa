"""A simulated saturation-recovery phantom through ISMRMRD: the k-space read back is the encoding
operator's output, and the operator built from what was read reproduces the adjoint image."""

from __future__ import annotations

import pytest
import torch

from operators import MultiCoilCartesianOp, simulate_coil_maps, variable_density_mask
from pinqi.io import read_raw, write_ismrmrd
from simulation import SaturationRecovery, load_anatomy

TIMES = (0.1, 0.3, 0.8, 2.0)
T1_S = {"csf": 4.0, "gm": 1.4, "wm": 0.8}


def _phantom_series(shape=(32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    anatomy = load_anatomy("phantom", "test", shape=shape)
    fractions = anatomy.fractions[:, 0]  # (K, Y, X)
    m0 = fractions.sum(0)
    r1 = sum(fractions[i] / T1_S[name] for i, name in enumerate(anatomy.class_names)) / m0.clamp_min(1e-6)
    phase = torch.linspace(-1.0, 1.0, shape[1]).expand(shape)
    params = torch.stack([m0 * torch.cos(phase), m0 * torch.sin(phase), r1])[None]  # (1, 3, Y, X)
    images = SaturationRecovery(torch.tensor(TIMES))(params).to(torch.complex64)  # (1, T, Y, X)
    return images, m0 > 0


@pytest.mark.parametrize("oversampling", [1, 2])
def test_phantom_kspace_survives_ismrmrd(tmp_path, oversampling):
    images, support = _phantom_series()
    csm = simulate_coil_maps(4, (32, 32), generator=0)[None]  # (1, C, Y, X)
    mask = variable_density_mask(len(TIMES), (32, 32), 3, generator=1)[None]  # (1, T, Y, X)
    op = MultiCoilCartesianOp(csm, mask)
    kspace = op(images)  # (1, T, C, Y, X)
    write_ismrmrd(tmp_path / "phantom.h5", kspace, mask, TIMES, oversampling=oversampling, coil_maps=csm,
                  calibration_lines=range(15, 18))
    raw = read_raw(tmp_path / "phantom.h5")
    scale = kspace.abs().max()
    torch.testing.assert_close(raw.kspace / scale, kspace / scale, rtol=0, atol=1e-6)
    assert torch.equal(raw.mask, mask.expand_as(raw.mask))
    torch.testing.assert_close(raw.times, torch.tensor(TIMES))
    assert raw.header["calibration_and_imaging_lines"] == 3 * len(TIMES)
    # the operator rebuilt from the file's maps and mask gives the same adjoint image
    read_op = MultiCoilCartesianOp(raw.coil_maps, raw.mask)
    adjoint, expected = read_op.H(raw.kspace), op.H(kspace)
    torch.testing.assert_close(adjoint / expected.abs().max(), expected / expected.abs().max(), rtol=0, atol=1e-6)
    assert float(images[..., support].abs().min()) > 0  # a real phantom, not an empty image
