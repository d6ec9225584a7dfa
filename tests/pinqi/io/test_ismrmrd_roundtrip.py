"""write_ismrmrd -> read_raw: k-space, mask, times, header, prewhitening, oversampling, atomic write."""

from __future__ import annotations

from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch

from pinqi.io import RawT1Data, read_raw, write_ismrmrd
from pinqi.io import ismrmrd_writer
from pinqi.io.prewhiten import noise_covariance, whitening_matrix
from tests.pinqi.io.helpers import line_data

TIMES = (0.12, 0.5, 1.1, 3.0)


@pytest.mark.parametrize("shape,oversampling", [
    ((1, 3, 1, 8, 8), 1), ((1, 3, 2, 9, 7), 2), ((2, 4, 3, 10, 11), 2), ((2, 2, 4, 7, 6), 1), ((1, 2, 3, 5, 9), 3),
])
def test_round_trip_equals_input(tmp_path, shape, oversampling):
    kspace, mask = line_data(shape, seed=sum(shape))
    times = TIMES[: shape[1]]
    write_ismrmrd(tmp_path / "raw.h5", kspace, mask, times, oversampling=oversampling, fov_mm=(200.0, 180.0, 4.0))
    raw = read_raw(tmp_path / "raw.h5")
    assert isinstance(raw, RawT1Data)
    assert raw.kspace.shape == shape and raw.kspace.dtype == torch.complex64
    assert raw.mask.dtype == torch.bool and torch.equal(raw.mask, mask)
    torch.testing.assert_close(raw.kspace, kspace, rtol=0, atol=2e-6)
    torch.testing.assert_close(raw.times, torch.tensor(times), rtol=1e-7, atol=0)
    h = raw.header
    assert h["format"] == "ismrmrd" and h["oversampling_removed"] == (oversampling > 1)
    assert h["encoded_matrix"] == (shape[4] * oversampling, shape[3], 1)
    assert h["matrix"] == shape[3:] and h["fov_mm"] == (200.0, 180.0, 4.0)
    assert h["field_strength_T"] == 3.0 and h["noise_prewhitened"] is False
    np.testing.assert_allclose(h["ti_ms"], [1000 * t for t in times])
    assert h["times_source"] == "header" and h["n_slices"] == shape[0] and raw.coil_maps is None
    assert h["source"] == str(tmp_path / "raw.h5")


def test_file_is_plain_ismrmrd(tmp_path):
    """What the ismrmrd package itself sees: header fields, flags, idx, only sampled lines."""
    kspace, mask = line_data((2, 3, 2, 8, 6), seed=3)
    write_ismrmrd(tmp_path / "raw.h5", kspace, mask, TIMES[:3], oversampling=2, calibration_lines=[4],
                  noise=torch.randn(2, 20, dtype=torch.complex64), field_strength_T=1.5)
    with ismrmrd.Dataset(str(tmp_path / "raw.h5"), mode="r") as dset:
        hdr = ismrmrd.xsd.CreateFromDocument(dset.read_xml_header())
        acqs = [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
    enc = hdr.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.reconSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (12, 6, 8)
    assert enc.encodingLimits.contrast.maximum == 2 and enc.encodingLimits.slice.maximum == 1
    assert enc.encodingLimits.kspace_encoding_step_1.center == 4
    assert hdr.sequenceParameters.TI == pytest.approx([120.0, 500.0, 1100.0])
    assert hdr.acquisitionSystemInformation.systemFieldStrength_T == 1.5
    noise = [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    lines = [a for a in acqs if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert sum(a.number_of_samples for a in noise) == 20
    assert len(lines) == int(mask[..., 0].sum())
    assert all(a.number_of_samples == 12 and a.center_sample == 6 and a.active_channels == 2 for a in lines)
    assert all(a.isChannelActive(0) and a.isChannelActive(1) and not a.isChannelActive(2) for a in lines)
    assert all(a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) == (a.idx.kspace_encode_step_1 == 4)
               for a in lines)
    firsts = [(a.idx.slice, a.idx.contrast) for a in lines if a.is_flag_set(ismrmrd.ACQ_FIRST_IN_CONTRAST)]
    assert firsts == [(s, c) for s in range(2) for c in range(3)]
    assert sum(a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) for a in lines) == 2
    assert lines[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    for a in lines:
        assert mask[a.idx.slice, a.idx.contrast, a.idx.kspace_encode_step_1, 0]


def test_times_override_and_coil_maps(tmp_path):
    kspace, mask = line_data((2, 3, 2, 6, 6), seed=5)
    maps = torch.randn(2, 2, 6, 6, dtype=torch.complex64)
    write_ismrmrd(tmp_path / "raw.h5", kspace, mask, TIMES[:3], coil_maps=maps)
    raw = read_raw(tmp_path / "raw.h5", times=[0.2, 0.4, 0.8])
    torch.testing.assert_close(raw.times, torch.tensor([0.2, 0.4, 0.8]))
    assert raw.header["times_source"] == "argument"
    np.testing.assert_allclose(raw.header["ti_ms"], [120.0, 500.0, 1100.0])  # what the file said
    torch.testing.assert_close(raw.coil_maps, maps, rtol=0, atol=0)


def _correlated_noise(n_coils: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_coils, n_coils, dtype=torch.complex128, generator=g) + 2 * torch.eye(n_coils)
    white = torch.randn(n_coils, n, dtype=torch.complex128, generator=g)
    return (mix @ white).to(torch.complex64), mix


def test_prewhitening_exact_and_statistical(tmp_path):
    """Image lines that are themselves correlated noise come out white; exact against an
    independent Cholesky whitening of the written noise scans."""
    n_c, y, x, t = 4, 32, 32, 2
    noise, mix = _correlated_noise(n_c, 6000, seed=1)
    draws = torch.randn(n_c, t * y * x, dtype=torch.complex64, generator=torch.Generator().manual_seed(7))
    lines = mix.to(torch.complex64) @ draws  # image lines with the same coil correlation as the noise
    kspace = lines.reshape(n_c, t, y, x).movedim(0, 1)[None]
    mask = torch.ones(1, t, y, x, dtype=torch.bool)
    maps = torch.randn(1, n_c, y, x, dtype=torch.complex64)
    write_ismrmrd(tmp_path / "raw.h5", kspace, mask, [0.5, 1.0], noise=noise, coil_maps=maps)
    raw = read_raw(tmp_path / "raw.h5")
    assert raw.header["noise_prewhitened"] is True and raw.header["noise_samples"] == 6000
    # exact: independent whitening L^-1 with Σ = (1/N) n nᴴ = L Lᴴ
    nz = noise.numpy().astype(np.complex128)
    chol = np.linalg.cholesky(nz @ nz.conj().T / nz.shape[1])
    expected = np.einsum("dc,stcyx->stdyx", np.linalg.inv(chol), kspace.numpy())
    np.testing.assert_allclose(raw.kspace.numpy(), expected, rtol=0, atol=5e-5)
    np.testing.assert_allclose(raw.coil_maps.numpy(), np.einsum("dc,scyx->sdyx", np.linalg.inv(chol), maps.numpy()),
                               rtol=0, atol=5e-5)
    # statistical: the whitened image noise has ~identity coil covariance (raw: far from it)
    white = raw.kspace[0].movedim(1, 0).reshape(n_c, -1).to(torch.complex128)
    cov = (white @ white.conj().T / white.shape[1]).numpy()
    np.testing.assert_allclose(cov, np.eye(n_c), atol=0.1)
    raw_cov = (lines.to(torch.complex128) @ lines.to(torch.complex128).conj().T / lines.shape[1]).numpy()
    assert np.abs(raw_cov - np.eye(n_c)).max() > 1.0


def test_whitened_noise_scans_have_identity_covariance():
    noise, _ = _correlated_noise(5, 400, seed=3)
    chunks = [noise[:, :150].numpy(), noise[:, 150:].numpy()]
    cov, n = noise_covariance(chunks, "test")
    w = whitening_matrix(cov, "test")
    white = w @ noise.numpy().astype(np.complex128)
    assert n == 400
    np.testing.assert_allclose(white @ white.conj().T / n, np.eye(5), atol=1e-10)
    assert np.allclose(np.tril(w), w)  # L^-1 is lower triangular
    np.testing.assert_allclose(whitening_matrix(cov, "test", dwell_ratio=0.25), 0.5 * w)


def test_prewhitening_accounts_for_dwell_time_ratio(tmp_path):
    kspace, mask = line_data((1, 2, 3, 6, 8), seed=9)
    noise, _ = _correlated_noise(3, 300, seed=4)
    write_ismrmrd(tmp_path / "a.h5", kspace, mask, [0.5, 1.0], noise=noise, sample_time_us=5.0)
    write_ismrmrd(tmp_path / "b.h5", kspace, mask, [0.5, 1.0], noise=noise, sample_time_us=5.0,
                  noise_sample_time_us=20.0)
    a, b = read_raw(tmp_path / "a.h5"), read_raw(tmp_path / "b.h5")
    assert b.header["noise_dwell_ratio"] == pytest.approx(0.25) and a.header["noise_dwell_ratio"] == 1.0
    torch.testing.assert_close(b.kspace, 0.5 * a.kspace, rtol=1e-5, atol=1e-6)


def test_prewhitening_with_oversampling_commutes(tmp_path):
    kspace, mask = line_data((1, 2, 3, 6, 7), seed=10)
    noise, _ = _correlated_noise(3, 300, seed=5)
    write_ismrmrd(tmp_path / "a.h5", kspace, mask, [0.5, 1.0], noise=noise)
    write_ismrmrd(tmp_path / "b.h5", kspace, mask, [0.5, 1.0], noise=noise, oversampling=2)
    torch.testing.assert_close(read_raw(tmp_path / "b.h5").kspace, read_raw(tmp_path / "a.h5").kspace,
                               rtol=0, atol=2e-5)


def test_write_is_atomic(tmp_path, monkeypatch):
    kspace, mask = line_data((1, 2, 2, 6, 6), seed=11)
    write_ismrmrd(tmp_path / "raw.h5", kspace, mask, [0.5, 1.0])
    before = (tmp_path / "raw.h5").read_bytes()

    def fail(tmp, acqs):
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw.h5.")] == [Path(tmp).name]
        raise RuntimeError("disk full")

    monkeypatch.setattr(ismrmrd_writer, "_write_acquisitions", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_ismrmrd(tmp_path / "raw.h5", kspace * 2, mask, [0.5, 1.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.h5"]
    assert (tmp_path / "raw.h5").read_bytes() == before


@pytest.mark.parametrize("kwargs,match", [
    ({"mask": "partial"}, "whole lines"),
    ({"oversampling": 1.5}, "oversampling"),
    ({"oversampling": 0}, "oversampling"),
    ({"calibration_lines": [0, 1, 2, 3, 4, 5]}, "calibration_lines"),
    ({"times": [500.0, 1000.0]}, "milliseconds"),
    ({"times": [0.5]}, "one saturation time per contrast"),
    ({"noise": torch.randn(3, 10, dtype=torch.complex64)}, "noise"),
    ({"coil_maps": torch.randn(2, 6, 6)}, "coil_maps"),
    ({"kspace": "nan"}, "finite"),
    ({"fov_mm": (220.0, 0.0, 5.0)}, "fov_mm"),
    ({"field_strength_T": -3.0}, "field_strength_T"),
])
def test_writer_refuses_bad_input(tmp_path, kwargs, match):
    kspace, mask = line_data((1, 2, 2, 6, 6), seed=12, keep=0.5)
    args = {"kspace": kspace, "mask": mask, "times": [0.5, 1.0]}
    if kwargs.get("mask") == "partial":
        kwargs["mask"] = mask.clone()
        kwargs["mask"][0, 0, 3, 0] = False
    if kwargs.get("kspace") == "nan":
        kwargs["kspace"] = kspace.clone()
        kwargs["kspace"][0, 0, 0, 3, 1] = float("nan")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        write_ismrmrd(tmp_path / "raw.h5", args.pop("kspace"), args.pop("mask"), args.pop("times"), **args)
    assert list(tmp_path.iterdir()) == []
