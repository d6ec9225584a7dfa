"""Every bad input to read_raw gives a FileNotFoundError or one clear ValueError."""

from __future__ import annotations

import h5py
import ismrmrd
import numpy as np
import pytest

from pinqi.io import read_raw, write_ismrmrd
from tests.pinqi.io.helpers import acquisition, ismrmrd_xml, line_data, write_fastmri, write_file

T, C, Y, X = 2, 2, 6, 8


def _lines(n_contrasts: int = T, value: float = 1.0, **kwargs):
    rng = np.random.default_rng(0)
    return [acquisition(value * (rng.standard_normal((C, X)) + 1j), c=c, line=y, **kwargs)
            for c in range(n_contrasts) for y in range(Y)]


def _xml(**kwargs) -> str:
    args = {"enc_x": X, "recon_x": X, "y": Y, "ky_center": Y // 2, "ky_max": Y - 1, "n_contrasts": T,
            "ti_ms": (300.0, 1200.0), **kwargs}
    return ismrmrd_xml(**args)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_raw(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    (tmp_path / "raw.h5").write_text("this is not HDF5")
    with pytest.raises(ValueError, match="expected an HDF5 file.*HDF5 signature"):
        read_raw(tmp_path / "raw.h5")


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_hdf5(tmp_path, fraction):
    kspace, mask = line_data((1, 2, 2, 8, 8), seed=0, keep=1.0)
    path = write_ismrmrd(tmp_path / "raw.h5", kspace, mask, [0.3, 1.2])
    data = path.read_bytes()
    path.write_bytes(data[: int(fraction * len(data))])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_raw(path)


def test_hdf5_of_another_layout(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expected an ISMRMRD group.*got top-level keys \['images'\]"):
        read_raw(tmp_path / "other.h5")


@pytest.mark.parametrize("xml_kwargs,acq_kwargs,match", [
    ({"ti_ms": None}, {}, "sequenceParameters.TI.*got none"),
    ({"ti_ms": (300.0, 600.0, 1200.0)}, {}, r"one sequenceParameters.TI per contrast \(2\); got 3"),
    ({"trajectory": "radial"}, {}, "expected a Cartesian trajectory; the header says 'radial'"),
    ({"n_contrasts": 3, "ti_ms": (1.0, 2.0, 3.0)}, {}, r"contrasts \[2\] have none"),
    ({"ky_center": 0}, {}, "within the encoded matrix"),
    ({"enc_x": 6, "recon_x": 6}, {}, "to fit the encoded readout"),
    ({}, {"value": 0.0}, "all zeros"),
    ({}, {"value": float("nan")}, "finite"),
    ({}, {"value": float("inf")}, "finite"),
])
def test_bad_ismrmrd(tmp_path, xml_kwargs, acq_kwargs, match):
    n_contrasts = 2 if "n_contrasts" in xml_kwargs else T
    write_file(tmp_path / "bad.h5", _xml(**xml_kwargs), _lines(n_contrasts, **acq_kwargs))
    with pytest.raises(ValueError, match=match):
        read_raw(tmp_path / "bad.h5")


def test_ismrmrd_times_argument_checked(tmp_path):
    write_file(tmp_path / "ok.h5", _xml(), _lines())
    with pytest.raises(ValueError, match=r"times= must hold one saturation time per contrast \(2\); got 3"):
        read_raw(tmp_path / "ok.h5", times=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="milliseconds"):
        read_raw(tmp_path / "ok.h5", times=[300.0, 1200.0])
    assert read_raw(tmp_path / "ok.h5", times=[0.3, 1.2]).header["times_source"] == "argument"


def test_ismrmrd_missing_ti_but_times_given(tmp_path):
    write_file(tmp_path / "noti.h5", _xml(ti_ms=None), _lines())
    raw = read_raw(tmp_path / "noti.h5", times=[0.3, 1.2])
    assert raw.header["ti_ms"] == [] and raw.times.tolist() == pytest.approx([0.3, 1.2])


def test_non_cartesian_acquisition(tmp_path):
    acqs = _lines()
    traj = ismrmrd.Acquisition.from_array(np.ones((C, X), np.complex64), trajectory=np.zeros((X, 2), np.float32))
    write_file(tmp_path / "traj.h5", _xml(), [*acqs, traj])
    with pytest.raises(ValueError, match="non-Cartesian"):
        read_raw(tmp_path / "traj.h5")


def test_three_d_encoding_and_bad_xml(tmp_path):
    write_file(tmp_path / "3d.h5", _xml().replace("<z>1</z>", "<z>4</z>"), _lines())
    with pytest.raises(ValueError, match="expected 2-D encoding"):
        read_raw(tmp_path / "3d.h5")
    write_file(tmp_path / "xml.h5", _xml().replace("</ismrmrdHeader>", ""), _lines())
    with pytest.raises(ValueError, match="expected a valid ISMRMRD XML header"):
        read_raw(tmp_path / "xml.h5")


def test_singular_noise(tmp_path):
    noise = acquisition(np.ones((C, 1)), flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT])
    write_file(tmp_path / "noise.h5", _xml(), [noise, *_lines()])
    with pytest.raises(ValueError, match="at least as many noise samples as coils"):
        read_raw(tmp_path / "noise.h5")
    noise = acquisition(np.ones((C, 20)), flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT])
    write_file(tmp_path / "noise.h5", _xml(), [noise, *_lines()])
    with pytest.raises(ValueError, match="positive-definite noise covariance"):
        read_raw(tmp_path / "noise.h5")


@pytest.mark.parametrize("change,match", [
    ({"saturation_times": [300.0, 1200.0]}, "look like milliseconds"),
    ({"saturation_times": None}, "attribute 'saturation_times'"),
    ({"saturation_times": [0.3]}, r"one saturation time per contrast \(2\); got 1"),
    ({"kspace": "nan"}, "expected finite k-space; got 1 NaN/Inf"),
    ({"kspace": "inf"}, "finite"),
    ({"kspace": "zeros"}, "all zeros"),
    ({"kspace": "real"}, "complex dataset"),
    ({"kspace": "3d"}, r"\(S, T, C, Y, X\)"),
    ({"mask": np.ones((T, Y, 3), bool)}, "/mask"),
])
def test_bad_fastmri(tmp_path, change, match):
    kspace = line_data((1, T, C, Y, X), seed=4)[0].numpy()
    kspace = {"nan": kspace.copy(), "inf": kspace.copy(), "zeros": np.zeros_like(kspace),
              "real": kspace.real, "3d": kspace[0, 0], None: kspace}[change.get("kspace")]
    if change.get("kspace") in ("nan", "inf"):
        kspace[0, 0, 0, Y // 2, 1] = float(change["kspace"])
    extra = {"mask": change["mask"]} if "mask" in change else {}
    write_fastmri(tmp_path / "f.h5", kspace, times=change.get("saturation_times", [0.3, 1.2]), **extra)
    with pytest.raises(ValueError, match=match):
        read_raw(tmp_path / "f.h5")


def test_no_image_lines(tmp_path):
    write_file(tmp_path / "empty.h5", _xml(), [])
    with pytest.raises(ValueError, match="expected ISMRMRD acquisitions under /dataset/data; got none"):
        read_raw(tmp_path / "empty.h5")
    noise = acquisition(np.ones((C, 20)), flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT])
    write_file(tmp_path / "noise_only.h5", _xml(), [noise])
    with pytest.raises(ValueError, match=r"expected image lines .*got none \(1 noise scans"):
        read_raw(tmp_path / "noise_only.h5")
