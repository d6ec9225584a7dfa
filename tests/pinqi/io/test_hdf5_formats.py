"""fastMRI-style HDF5 (4-D and 5-D, with and without mask / coil maps) and the project's own HDF5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pinqi.io import detect_format, read_raw
from simulation.h5io import write_t1_dataset_h5
from tests.pinqi.io.helpers import line_data, write_fastmri


@pytest.mark.parametrize("slices", [None, 1, 2])
def test_fastmri_without_mask_derives_lines(tmp_path, slices):
    shape = (slices or 1, 3, 2, 9, 6)
    kspace, mask = line_data(shape, seed=1)
    write_fastmri(tmp_path / "f.h5", (kspace[0] if slices is None else kspace).numpy(), times=(0.1, 0.4, 1.6))
    raw = read_raw(tmp_path / "f.h5")
    assert detect_format(tmp_path / "f.h5") == ("fastmri", None)
    torch.testing.assert_close(raw.kspace, kspace, rtol=0, atol=0)
    assert torch.equal(raw.mask, mask)
    torch.testing.assert_close(raw.times, torch.tensor([0.1, 0.4, 1.6]))
    assert raw.header["format"] == "fastmri" and raw.header["mask_source"] == "non-zero lines"
    assert raw.coil_maps is None


@pytest.mark.parametrize("four_d", [True, False])
def test_fastmri_with_mask_and_maps(tmp_path, four_d):
    kspace, mask = line_data((1, 3, 2, 8, 8), seed=2)
    noisy = kspace + 0.1 * (~mask[:, :, None])  # signal outside the mask must be dropped
    maps = torch.randn(1, 2, 8, 8, dtype=torch.complex64)
    pick = (lambda a: a[0]) if four_d else (lambda a: a)
    write_fastmri(tmp_path / "f.h5", pick(noisy).numpy(), times=(0.1, 0.4, 1.6),
                  mask=pick(mask).numpy().astype(np.uint8), csm=pick(maps).numpy())
    raw = read_raw(tmp_path / "f.h5", times=[0.2, 0.3, 0.9])
    torch.testing.assert_close(raw.kspace, kspace, rtol=0, atol=0)
    assert torch.equal(raw.mask, mask) and raw.header["samples_zeroed_outside_mask"] == int((~mask).sum()) * 2
    torch.testing.assert_close(raw.coil_maps, maps)
    torch.testing.assert_close(raw.times, torch.tensor([0.2, 0.3, 0.9]))
    assert raw.header["times_source"] == "argument"


def _samples(n: int, times=(0.3, 0.9)):
    for i in range(n):
        kspace, mask = line_data((1, 2, 3, 6, 5), seed=20 + i)
        yield {"kspace": kspace[0], "mask": mask[0], "times": torch.tensor(times),
               "csm": torch.full((3, 6, 5), 1 + 1j * i, dtype=torch.complex64), "params": torch.zeros(3, 6, 5)}


def test_own_hdf5(tmp_path):
    path = write_t1_dataset_h5(_samples(2), tmp_path / "own.h5")
    raw = read_raw(path)
    expected = list(_samples(2))
    assert detect_format(path) == ("pinqi-h5", None)
    torch.testing.assert_close(raw.kspace, torch.stack([s["kspace"] for s in expected]), rtol=0, atol=0)
    assert torch.equal(raw.mask, torch.stack([s["mask"] for s in expected]))
    torch.testing.assert_close(raw.coil_maps, torch.stack([s["csm"] for s in expected]))
    torch.testing.assert_close(raw.times, torch.tensor([0.3, 0.9]))
    assert raw.header["format"] == "pinqi-h5" and raw.header["n_slices"] == 2
    assert raw.header["file_format"] == "pinqi-t1-synthetic-v1"


def test_own_hdf5_refuses_radial_and_mixed_times(tmp_path):
    samples = list(_samples(2))
    samples[1]["times"] = torch.tensor([0.3, 1.0])
    write_t1_dataset_h5(samples, tmp_path / "mixed.h5")
    with pytest.raises(ValueError, match="same /times for every sample"):
        read_raw(tmp_path / "mixed.h5")
    radial = [{"kspace": torch.ones(2, 3, 40, dtype=torch.complex64), "trajectory": torch.zeros(2, 2, 40),
               "times": torch.tensor([0.3, 0.9])}]
    write_t1_dataset_h5(radial, tmp_path / "radial.h5")
    with pytest.raises(ValueError, match="Cartesian k-space; got a radial file"):
        read_raw(tmp_path / "radial.h5")
