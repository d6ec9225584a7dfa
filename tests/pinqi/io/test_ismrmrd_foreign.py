"""ISMRMRD files written directly with the ismrmrd package, in ways pinqi.io's writer does not:
lines in random order, a calibration-only line, an asymmetric echo (centre sample not at N/2),
a k-space centre line that is not Y/2, two averages, a navigator, non-contiguous slice indices,
noise scans in the middle, readout oversampling with a partial echo."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest
import torch

from operators.fft import centered_fft, centered_ifft
from pinqi.io import read_raw
from tests.pinqi.io.helpers import acquisition, ismrmrd_xml, write_file

S_IDX, T, C, Y, X = (0, 3), 3, 2, 10, 8
N_SAMPLES, CENTER = 7, 3  # asymmetric echo: sample i -> column i - 3 + 4 = i + 1
KY_CENTER = 4  # line l -> row l - 4 + 5 = l + 1


def _acq(data: np.ndarray, **kwargs) -> ismrmrd.Acquisition:
    return acquisition(data, **{"center": CENTER, **kwargs})


def _foreign_file(path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Write the file; return the expected k-space (S, T, C, Y, X) and line mask (S, T, Y)."""
    grid = rng.standard_normal((2, T, C, Y, X)) + 1j * rng.standard_normal((2, T, C, Y, X))
    expected = np.zeros_like(grid)
    rows = np.zeros((2, T, Y), dtype=bool)
    acqs = []
    for si, s in enumerate(S_IDX):
        for c in range(T):
            for line in sorted({0, 2, 4, 5, 7} | set(rng.choice(8, 2).tolist())):
                data = grid[si, c, :, line + 1, 1:]
                if line == 4:  # two averages whose mean is the grid
                    d = rng.standard_normal(data.shape)
                    acqs += [_acq(data + d, s=s, c=c, line=line), _acq(data - d, s=s, c=c, line=line, average=1)]
                else:
                    acqs.append(_acq(data, s=s, c=c, line=line))
                expected[si, c, :, line + 1, 1:] = data
                rows[si, c, line + 1] = True
    # a calibration-only line (slice 0, contrast 0, line 6), used like an image line
    acqs.append(_acq(grid[0, 0, :, 7, 1:], line=6, flags=[ismrmrd.ACQ_IS_PARALLEL_CALIBRATION]))
    expected[0, 0, :, 7, 1:] = grid[0, 0, :, 7, 1:]
    rows[0, 0, 7] = True
    acqs.append(_acq(100 * np.ones((C, N_SAMPLES)), line=1, flags=[ismrmrd.ACQ_IS_NAVIGATION_DATA]))
    order = rng.permutation(len(acqs))
    xml = ismrmrd_xml(enc_x=X, recon_x=X, y=Y, ky_center=KY_CENTER, ky_max=7, n_contrasts=T, slice_max=3,
                      ti_ms=(150.0, 600.0, 2400.0))
    write_file(path, xml, [acqs[i] for i in order])
    return expected, rows


def test_foreign_file_reads_correctly(tmp_path):
    expected, rows = _foreign_file(tmp_path / "foreign.h5", np.random.default_rng(0))
    raw = read_raw(tmp_path / "foreign.h5")
    assert raw.kspace.shape == (2, T, C, Y, X)
    np.testing.assert_allclose(raw.kspace.numpy(), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(raw.mask.numpy(), np.broadcast_to(rows[..., None], (2, T, Y, X)))
    torch.testing.assert_close(raw.times, torch.tensor([0.15, 0.6, 2.4]))
    h = raw.header
    assert h["slice_indices"] == [0, 3] and h["ky_center"] == KY_CENTER and h["center_samples"] == [CENTER]
    assert h["calibration_only_lines"] == 1 and h["skipped_acquisitions"] == {"navigation": 1}
    assert h["repeated_lines_averaged"] == 2 * T and h["max_repeats"] == 2
    assert h["partial_readout_lines"] == int(rows.sum()) + 2 * T  # every image acquisition (2nd averages too)
    assert h["field_strength_T"] is None and h["noise_prewhitened"] is False
    assert h["fov_mm"] == (20.0, 25.0, 6.0)


@pytest.mark.parametrize("enc_x,recon_x", [(16, 8), (14, 7)])
def test_oversampled_partial_echo_and_noise_in_the_middle(tmp_path, enc_x, recon_x):
    """Readout oversampling removed after placing an asymmetric echo; noise scans anywhere. The
    central image columns kept start at enc_x // 2 - recon_x // 2 (= 4 in both cases)."""
    rng = np.random.default_rng(1)
    n_samples, center = enc_x - 3, enc_x // 2 - 3  # sample i -> column i + 3
    lines = rng.standard_normal((T, C, Y, n_samples)) + 1j * rng.standard_normal((T, C, Y, n_samples))
    xml = ismrmrd_xml(enc_x=enc_x, recon_x=recon_x, y=Y, ky_center=Y // 2, ky_max=Y - 1, n_contrasts=T,
                      ti_ms=(100.0, 400.0, 1600.0))
    noise = rng.standard_normal((C, 64)) + 1j * rng.standard_normal((C, 64))
    acqs = [_acq(lines[c, :, y], c=c, line=y, center=center) for c in range(T) for y in range(Y)]
    acqs.insert(Y + 3, _acq(noise, flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT]))
    write_file(tmp_path / "os.h5", xml, acqs)
    raw = read_raw(tmp_path / "os.h5")
    grid = np.zeros((T, C, Y, enc_x), dtype=complex)
    grid[..., 3:] = lines
    whitener = np.linalg.inv(np.linalg.cholesky(noise @ noise.conj().T / 64))
    image = centered_ifft(torch.from_numpy(np.einsum("dc,tcyx->tdyx", whitener, grid)), dims=(-1,))
    expected = centered_fft(image[..., 4:4 + recon_x], dims=(-1,)).numpy()
    np.testing.assert_allclose(raw.kspace[0].numpy(), expected, rtol=0, atol=1e-5)
    assert raw.header["oversampling_removed"] and raw.header["noise_prewhitened"]
    assert raw.header["readout_oversampling"] == 2.0 and raw.header["noise_scans"] == 1
