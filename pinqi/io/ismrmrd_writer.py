"""Write Cartesian multi-contrast k-space as a valid ISMRMRD file (through the ``ismrmrd`` package)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import ismrmrd.hdf5
import ismrmrd.xsd as xsd
import numpy as np
import torch

from .raw_ismrmrd import COIL_MAPS_ARRAY
from .readout import add_readout_oversampling
from .types import check_kspace_values, check_times

__all__ = ["write_ismrmrd", "GYROMAGNETIC_RATIO_HZ_PER_T"]

#: proton gyromagnetic ratio / 2π in Hz/T (for H1resonanceFrequency_Hz)
GYROMAGNETIC_RATIO_HZ_PER_T = 42.577478518e6


def _tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch tensor or numpy array; got {type(value).__name__}")
    return torch.as_tensor(value).detach().cpu()


def _check_inputs(kspace: Any, mask: Any) -> tuple[torch.Tensor, np.ndarray]:
    """k-space as complex128 (S, T, C, Y, X) and the line mask as bool (S, T, Y)."""
    k = _tensor("kspace", kspace)
    if not k.is_complex() or k.ndim not in (4, 5):
        raise ValueError(f"kspace must be complex (S, T, C, Y, X) or (T, C, Y, X); got {tuple(k.shape)} {k.dtype}")
    k = (k[None] if k.ndim == 4 else k).to(torch.complex128)
    n_s, n_t, _, n_y, n_x = k.shape
    m = _tensor("mask", mask)
    m = m[None] if m.ndim == 3 else m
    if m.ndim != 4 or tuple(m.shape[:3]) != (n_s, n_t, n_y) or m.shape[3] not in (1, n_x):
        raise ValueError(f"mask must have shape {(n_s, n_t, n_y, n_x)} (or X = 1, or no slice axis); "
                         f"got {tuple(m.shape)}")
    m = m.to(torch.bool)
    lines = m.any(-1)
    if bool((m != lines[..., None]).any()):
        raise ValueError("mask must sample whole lines (each (slice, time, y) row all True or all False); "
                         "got partially sampled rows")
    if not bool(lines.any()):
        raise ValueError("mask must sample at least one line; got none")
    return k, lines.numpy()


def _limit(maximum: int, center: int = 0) -> xsd.limitType:
    return xsd.limitType(minimum=0, maximum=int(maximum), center=int(center))


def _space(nx: int, ny: int, fov: tuple[float, float, float]) -> xsd.encodingSpaceType:
    return xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=nx, y=ny, z=1),
                                 fieldOfView_mm=xsd.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]))


def _xml_header(shape: tuple[int, ...], oversampling: int, ti_ms: list[float], fov_mm: tuple[float, float, float],
                field_strength_T: float, n_calibration: int) -> str:
    n_s, n_t, n_c, n_y, n_x = shape
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_0=_limit(n_x * oversampling - 1, (n_x * oversampling) // 2),
        kspace_encoding_step_1=_limit(n_y - 1, n_y // 2), kspace_encoding_step_2=_limit(0),
        average=_limit(0), slice=_limit(n_s - 1), contrast=_limit(n_t - 1), phase=_limit(0),
        repetition=_limit(0), set=_limit(0), segment=_limit(0))
    encoding = xsd.encodingType(
        encodedSpace=_space(n_x * oversampling, n_y, (fov_mm[0] * oversampling, fov_mm[1], fov_mm[2])),
        reconSpace=_space(n_x, n_y, fov_mm), encodingLimits=limits, trajectory=xsd.trajectoryType.CARTESIAN,
        parallelImaging=xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=1, kspace_encoding_step_2=1),
            calibrationMode=xsd.calibrationModeType.EMBEDDED) if n_calibration else None)
    header = xsd.ismrmrdHeader(
        version=1,
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="pinqi", systemModel="simulation", systemFieldStrength_T=float(field_strength_T),
            receiverChannels=n_c),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round(GYROMAGNETIC_RATIO_HZ_PER_T * field_strength_T))),
        encoding=[encoding],
        sequenceParameters=xsd.sequenceParametersType(TI=ti_ms, sequence_type="SaturationRecovery"))
    return xsd.ToXML(header)


def _acquisition(data: np.ndarray, scan: int, sample_time_us: float, flags: Sequence[int]) -> ismrmrd.Acquisition:
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64), version=1,
                                         scan_counter=scan, center_sample=data.shape[1] // 2,
                                         sample_time_us=float(sample_time_us))
    for c in range(data.shape[0]):
        acq.setChannelActive(c)
    for flag in flags:
        acq.set_flag(flag)
    for i in range(3):
        acq.read_dir[i], acq.phase_dir[i], acq.slice_dir[i] = float(i == 0), float(i == 1), float(i == 2)
    return acq


def _line_flags(first: bool, last: bool, first_slice: bool, last_slice: bool, calibration: bool) -> list[int]:
    flags = [ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING] if calibration else []
    flags += [ismrmrd.ACQ_FIRST_IN_CONTRAST, ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1] if first else []
    flags += [ismrmrd.ACQ_LAST_IN_CONTRAST, ismrmrd.ACQ_LAST_IN_ENCODE_STEP1] if last else []
    flags += [ismrmrd.ACQ_FIRST_IN_SLICE] if first_slice else []
    flags += [ismrmrd.ACQ_LAST_IN_SLICE] if last_slice else []
    return flags


def _noise_acquisitions(noise: torch.Tensor, n_coils: int, chunk: int, dwell: float) -> list[ismrmrd.Acquisition]:
    if noise.ndim != 2 or noise.shape[0] != n_coils or not noise.is_complex() or noise.shape[1] == 0:
        raise ValueError(f"noise must be complex (C, N) with C = {n_coils} coils; "
                         f"got {tuple(noise.shape)} {noise.dtype}")
    arr = noise.numpy()
    return [_acquisition(arr[:, start:start + chunk], scan, dwell, [ismrmrd.ACQ_IS_NOISE_MEASUREMENT])
            for scan, start in enumerate(range(0, arr.shape[1], chunk))]


def _line_acquisitions(encoded: np.ndarray, lines: np.ndarray, cal: list[int], first_scan: int,
                       sample_time_us: float, slice_thickness_mm: float) -> list[ismrmrd.Acquisition]:
    """One acquisition per sampled line of ``encoded`` (S, T, C, Y, X_enc), slice by slice."""
    acqs = []
    n_s = encoded.shape[0]
    for s in range(n_s):
        slice_rows = [(c, y) for c in range(encoded.shape[1]) for y in np.flatnonzero(lines[s, c])]
        for i, (c, y) in enumerate(slice_rows):
            rows = np.flatnonzero(lines[s, c])
            last = i == len(slice_rows) - 1
            flags = _line_flags(y == rows[0], y == rows[-1], i == 0, last, y in cal)
            flags += [ismrmrd.ACQ_LAST_IN_MEASUREMENT] if s == n_s - 1 and last else []
            acq = _acquisition(encoded[s, c, :, y], first_scan + len(acqs), sample_time_us, flags)
            acq.idx.kspace_encode_step_1, acq.idx.slice, acq.idx.contrast = int(y), s, c
            acq.position[2] = float(s * slice_thickness_mm)
            acqs.append(acq)
    return acqs


def _write_acquisitions(path: str, acqs: list[ismrmrd.Acquisition]) -> None:
    """Store acquisitions as ``/dataset/data`` in the ismrmrd package's record type, in one write.

    Same records as ``ismrmrd.Dataset.append_acquisition`` (header bytes, float32 data and
    trajectory), which resizes and writes the dataset once per line (~6 ms each).
    """
    records = np.empty((len(acqs),), dtype=ismrmrd.hdf5.acquisition_dtype)
    for i, acq in enumerate(acqs):
        records[i]["head"] = np.frombuffer(acq.getHead(), dtype=ismrmrd.hdf5.acquisition_header_dtype)[0]
        records[i]["data"] = acq.data.view(np.float32).reshape(-1)
        records[i]["traj"] = acq.traj.view(np.float32).reshape(-1)
    with h5py.File(path, "r+") as f:
        f["dataset"].create_dataset("data", data=records, maxshape=(None,), chunks=True)


def write_ismrmrd(
    path: str | os.PathLike,
    kspace: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    times: Sequence[float] | torch.Tensor | np.ndarray,
    *,
    noise: torch.Tensor | np.ndarray | None = None,
    oversampling: int = 1,
    calibration_lines: Sequence[int] | None = None,
    fov_mm: tuple[float, float, float] = (220.0, 220.0, 5.0),
    field_strength_T: float = 3.0,
    sample_time_us: float = 5.0,
    noise_sample_time_us: float | None = None,
    coil_maps: torch.Tensor | np.ndarray | None = None,
) -> Path:
    """Write multi-contrast Cartesian k-space as an ISMRMRD file that :func:`pinqi.io.read_raw` reads.

    Parameters
    ----------
    path
        Target file; its folder must exist. Written under a temporary name in that folder and
        renamed only when complete.
    kspace
        ``(S, T, C, Y, X)`` or ``(T, C, Y, X)`` complex on the project's centred grid.
    mask
        ``(S, T, Y, X)`` / ``(T, Y, X)`` bool (X may be 1); whole lines only. Only sampled lines
        are written.
    times
        ``(T,)`` saturation times in seconds; stored as ``sequenceParameters.TI`` in ms.
    noise
        Optional ``(C, N)`` complex noise-only samples, written first as acquisitions flagged
        ``ACQ_IS_NOISE_MEASUREMENT`` (split into readout-long pieces).
    oversampling
        Integer readout oversampling: ``encodedSpace.x = oversampling · X``; each line is
        zero-padded in image space along X (the reader's removal undoes it exactly).
    calibration_lines
        Phase-encode rows ``y`` flagged ``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING`` (each must be
        sampled in every slice and contrast).
    fov_mm
        Reconstructed field of view ``(x = readout, y = phase encode, z = slice thickness)`` in mm.
    field_strength_T
        ``systemFieldStrength_T``; also sets ``H1resonanceFrequency_Hz``.
    sample_time_us, noise_sample_time_us
        Dwell times of image lines and noise scans (noise defaults to the image dwell).
    coil_maps
        Optional ``(S, C, Y, X)`` / ``(C, Y, X)`` complex maps stored as the ISMRMRD array
        ``coil_maps`` (a pinqi extension; other readers ignore it).

    Returns
    -------
    The final path.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"the folder of path must exist; got {str(path)!r}")
    k, lines = _check_inputs(kspace, mask)
    n_s, n_t, n_c, n_y, n_x = k.shape
    check_kspace_values(k, "kspace")
    t = check_times(times, n_t, "times")
    if not isinstance(oversampling, int) or isinstance(oversampling, bool) or oversampling < 1:
        raise ValueError(f"oversampling must be an integer >= 1; got {oversampling!r}")
    fov = tuple(float(v) for v in np.asarray(fov_mm, dtype=np.float64).reshape(-1))
    if len(fov) != 3 or not all(np.isfinite(v) and v > 0 for v in fov):
        raise ValueError(f"fov_mm must be three positive lengths (x, y, z) in mm; got {fov_mm!r}")
    for name, value in (("field_strength_T", field_strength_T), ("sample_time_us", sample_time_us),
                        ("noise_sample_time_us", noise_sample_time_us)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number; got {value!r}")
    cal = sorted({int(y) for y in (calibration_lines or [])})
    if cal and (cal[0] < 0 or cal[-1] >= n_y or not lines[:, :, cal].all()):
        raise ValueError(f"calibration_lines must be rows in [0, {n_y}) sampled in every slice and contrast; got {cal}")
    maps = None
    if coil_maps is not None:
        maps = _tensor("coil_maps", coil_maps)
        maps = maps[None] if maps.ndim == 3 else maps
        if tuple(maps.shape) != (n_s, n_c, n_y, n_x) or not maps.is_complex():
            raise ValueError(f"coil_maps must be complex {(n_s, n_c, n_y, n_x)}; got {tuple(maps.shape)} {maps.dtype}")
    encoded = add_readout_oversampling(k, n_x * oversampling) if oversampling > 1 else k
    encoded = encoded.numpy()
    xml = _xml_header((n_s, n_t, n_c, n_y, n_x), oversampling, [1000.0 * v for v in t.tolist()],
                      fov, field_strength_T, len(cal))
    acqs = []
    if noise is not None:
        noise_dwell = sample_time_us if noise_sample_time_us is None else noise_sample_time_us
        acqs = _noise_acquisitions(_tensor("noise", noise), n_c, n_x * oversampling, noise_dwell)
    acqs += _line_acquisitions(encoded, lines, cal, len(acqs), sample_time_us, fov[2])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the final file the usual permissions
        with ismrmrd.Dataset(tmp, mode="w") as dset:
            dset.write_xml_header(xml.encode())
            if maps is not None:
                dset.append_array(COIL_MAPS_ARRAY, maps.numpy().astype(np.complex64))
        _write_acquisitions(tmp, acqs)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
