"""Read Cartesian multi-contrast ISMRMRD raw data (through the ``ismrmrd`` package)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np
import torch

from .ismrmrd_header import EncodingInfo, parse_header
from .prewhiten import noise_covariance, whitening_matrix
from .readout import place_readout, remove_readout_oversampling
from .types import RawT1Data, check_kspace_values, check_times

__all__ = ["read_ismrmrd", "find_ismrmrd_group", "COIL_MAPS_ARRAY"]

#: name of the optional ISMRMRD array holding coil maps (S, C, Y, X) (a pinqi extension)
COIL_MAPS_ARRAY = "coil_maps"

# acquisitions that are not image lines: skipped and counted in header["skipped_acquisitions"]
_SKIPPED = {
    "navigation": ismrmrd.ACQ_IS_NAVIGATION_DATA,
    "phase_correction": ismrmrd.ACQ_IS_PHASECORR_DATA,
    "dummy_scan": ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
    "hp_feedback": ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
    "rt_feedback": ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
    "surface_coil_correction": ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA,
    "phase_stabilization_reference": ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
    "phase_stabilization": ismrmrd.ACQ_IS_PHASE_STABILIZATION,
}


def find_ismrmrd_group(f: h5py.File) -> str | None:
    """Name of the top-level group holding an ISMRMRD ``xml`` header (``"dataset"`` first)."""
    names = sorted(f.keys(), key=lambda n: n != "dataset")
    for name in names:
        obj = f.get(name)
        if isinstance(obj, h5py.Group) and "xml" in obj:
            return name
    return None


@dataclass
class _Lines:
    """Image lines accumulated per (slice, contrast, ky) as sums and counts."""

    n_x: int
    n_coils: int | None = None
    sums: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    noise: list[np.ndarray] = field(default_factory=list)
    noise_dwell_us: set[float] = field(default_factory=set)
    dwell_us: set[float] = field(default_factory=set)
    centers: set[int] = field(default_factory=set)
    calibration_only: int = 0
    calibration_and_imaging: int = 0
    partial_lines: int = 0
    skipped: Counter = field(default_factory=Counter)


def _check_channels(lines: _Lines, acq: ismrmrd.Acquisition, where: str) -> None:
    if lines.n_coils is None:
        lines.n_coils = int(acq.active_channels)
    elif acq.active_channels != lines.n_coils:
        raise ValueError(f"{where}: expected {lines.n_coils} active channels like the earlier acquisitions; "
                         f"got {acq.active_channels}")


def _acquisitions(f: h5py.File, group: str, source: str, chunk: int = 4096) -> Iterator[ismrmrd.Acquisition]:
    """Every acquisition of ``/group/data`` as an ``ismrmrd.Acquisition``, read in blocks.

    Builds each acquisition exactly as ``ismrmrd.Dataset.read_acquisition`` does, but from one
    HDF5 read per block of records: ``read_acquisition`` reads every record twice, ~10 ms per
    line, i.e. seconds per slice.
    """
    data = f[group].get("data")
    if not isinstance(data, h5py.Dataset) or data.shape[0] == 0:
        raise ValueError(f"{source}: expected ISMRMRD acquisitions under /{group}/data; got none")
    for start in range(0, data.shape[0], chunk):
        for i, rec in enumerate(data[start:start + chunk], start):
            acq = ismrmrd.Acquisition(rec["head"])
            shape = (acq.active_channels, acq.number_of_samples)
            if rec["data"].size != 2 * shape[0] * shape[1] or rec["traj"].size != shape[1] * acq.trajectory_dimensions:
                raise ValueError(f"{source}: acquisition {i}: expected {shape[0]} x {shape[1]} samples as its header "
                                 f"says; got {rec['data'].size // 2} values (corrupt file)")
            acq.data[:] = rec["data"].view(np.complex64).reshape(shape)
            if acq.trajectory_dimensions:
                acq.traj[:] = rec["traj"].reshape(shape[1], acq.trajectory_dimensions)
            yield acq


def _collect(acquisitions: Iterable[ismrmrd.Acquisition], n_x: int, source: str) -> _Lines:
    """Sort every acquisition into noise, image lines (summed per position) or skipped."""
    lines = _Lines(n_x=n_x)
    for i, acq in enumerate(acquisitions):
        where = f"{source}: acquisition {i}"
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            _check_channels(lines, acq, where)
            lines.noise.append(np.array(acq.data, dtype=np.complex128))
            lines.noise_dwell_us.add(float(acq.sample_time_us))
            continue
        skipped = [name for name, flag in _SKIPPED.items() if acq.is_flag_set(flag)]
        if skipped:
            lines.skipped[skipped[0]] += 1
            continue
        if acq.trajectory_dimensions > 0:
            raise ValueError(f"{where}: expected a Cartesian line without trajectory; got "
                             f"trajectory_dimensions = {acq.trajectory_dimensions} (non-Cartesian data)")
        if acq.is_flag_set(ismrmrd.ACQ_IS_REVERSE):
            raise ValueError(f"{where}: expected forward readouts; got ACQ_IS_REVERSE (EPI-style data)")
        if acq.encoding_space_ref != 0 or acq.idx.kspace_encode_step_2 != 0:
            raise ValueError(f"{where}: expected encoding 0 and kspace_encode_step_2 = 0 (2-D); got "
                             f"encoding_space_ref {acq.encoding_space_ref}, step_2 {acq.idx.kspace_encode_step_2}")
        _check_channels(lines, acq, where)
        if acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION):
            lines.calibration_only += 1
        elif acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING):
            lines.calibration_and_imaging += 1
        data = np.array(acq.data, dtype=np.complex128)
        if not np.all(np.isfinite(data.view(np.float64))):
            raise ValueError(f"{where}: expected finite samples; got NaN/Inf")
        row = place_readout(data, int(acq.center_sample), int(acq.discard_pre), int(acq.discard_post), n_x, where)
        lines.partial_lines += int(acq.number_of_samples - acq.discard_pre - acq.discard_post < n_x)
        lines.centers.add(int(acq.center_sample))
        lines.dwell_us.add(float(acq.sample_time_us))
        key = (int(acq.idx.slice), int(acq.idx.contrast), int(acq.idx.kspace_encode_step_1))
        lines.sums[key] = lines.sums[key] + row if key in lines.sums else row
        lines.counts[key] += 1
    if not lines.sums:
        raise ValueError(f"{source}: expected image lines in the ISMRMRD acquisitions; got none "
                         f"({len(lines.noise)} noise scans, skipped {dict(lines.skipped)})")
    return lines


def _contrasts(info: EncodingInfo, lines: _Lines, source: str) -> int:
    present = sorted({c for _, c, _ in lines.sums})
    n_t = info.n_contrasts if info.n_contrasts is not None else present[-1] + 1
    if present[-1] >= n_t:
        raise ValueError(f"{source}: expected contrast indices < {n_t} (encodingLimits.contrast); "
                         f"got {present[-1]}")
    missing = sorted(set(range(n_t)) - set(present))
    if missing:
        raise ValueError(f"{source}: expected lines for each of the {n_t} contrasts; contrasts {missing} have none")
    return n_t


def _times(info: EncodingInfo, n_t: int, times: Any, source: str) -> tuple[torch.Tensor, str]:
    if times is not None:
        return check_times(times, n_t, "times="), "argument"
    if not info.ti_ms:
        raise ValueError(f"{source}: expected the saturation times in the header (sequenceParameters.TI, "
                         "ms, one per contrast); got none (pass times= in seconds)")
    if len(info.ti_ms) != n_t:
        raise ValueError(f"{source}: expected one sequenceParameters.TI per contrast ({n_t}); got "
                         f"{len(info.ti_ms)}: {list(info.ti_ms)} ms")
    return check_times([t / 1000.0 for t in info.ti_ms], n_t, f"{source}: sequenceParameters.TI / 1000"), "header"


def _grid(info: EncodingInfo, lines: _Lines, n_t: int, source: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Average repeated lines and put them on the (S, T, C, Y, X_encoded) grid."""
    slices = sorted({s for s, _, _ in lines.sums})
    n_y = info.encoded_matrix[1]
    assert lines.n_coils is not None
    kspace = np.zeros((len(slices), n_t, lines.n_coils, n_y, lines.n_x), dtype=np.complex128)
    mask = np.zeros((len(slices), n_t, n_y), dtype=bool)
    slice_pos = {s: i for i, s in enumerate(slices)}
    for (s, c, line), total in lines.sums.items():
        row = line - info.ky_center + n_y // 2
        if not 0 <= row < n_y:
            raise ValueError(f"{source}: expected kspace_encode_step_1 within the encoded matrix (y = {n_y}, "
                             f"centre line {info.ky_center}); got line {line} (grid row {row})")
        kspace[slice_pos[s], c, :, row] = total / lines.counts[(s, c, line)]
        mask[slice_pos[s], c, row] = True
    return kspace, mask, slices


def _whitener(lines: _Lines, info: EncodingInfo, source: str) -> tuple[np.ndarray | None, dict[str, Any]]:
    if not lines.noise:
        return None, {"noise_prewhitened": False, "noise_scans": 0}
    cov, n_samples = noise_covariance(lines.noise, source)
    noise_dwell = max(lines.noise_dwell_us)
    dwell = max(lines.dwell_us)
    ratio = dwell / noise_dwell if noise_dwell > 0 and dwell > 0 else 1.0
    meta = {"noise_prewhitened": True, "noise_scans": len(lines.noise), "noise_samples": n_samples,
            "noise_dwell_time_us": sorted(lines.noise_dwell_us), "acquisition_dwell_time_us": sorted(lines.dwell_us),
            "noise_dwell_ratio": ratio, "noise_dwell_ratio_assumed": not (noise_dwell > 0 and dwell > 0),
            "relative_noise_bandwidth": info.relative_noise_bandwidth}
    return whitening_matrix(cov, source, ratio), meta


def _read_coil_maps(dset: ismrmrd.Dataset, shape: tuple[int, ...], source: str) -> np.ndarray | None:
    try:
        maps = np.asarray(dset.read_array(COIL_MAPS_ARRAY, 0))
    except (LookupError, KeyError):
        return None
    if maps.dtype.names:  # compound (real, imag) if h5py did not map it to complex
        maps = maps["real"] + 1j * maps["imag"]
    if maps.shape != shape or not np.iscomplexobj(maps):
        raise ValueError(f"{source}: expected the {COIL_MAPS_ARRAY!r} array to be complex {shape} (S, C, Y, X); "
                         f"got {maps.shape} {maps.dtype}")
    return maps.astype(np.complex128)


def read_ismrmrd(path: str | Path, group: str, *, times: Any = None) -> RawT1Data:
    """Read a Cartesian multi-contrast ISMRMRD file (layout and processing in :mod:`pinqi.io`).

    Parameters
    ----------
    path
        The ISMRMRD HDF5 file.
    group
        Its top-level group (usually ``"dataset"``), see :func:`find_ismrmrd_group`.
    times
        ``(T,)`` saturation times in seconds overriding ``sequenceParameters.TI``.

    Returns
    -------
    RawT1Data
        k-space ``(S, T, C, Y, X)`` prewhitened when noise scans exist, readout oversampling
        removed, repeated lines averaged.
    """
    source = str(path)
    with ismrmrd.Dataset(source, dataset_name=group, create_if_needed=False, mode="r") as dset, \
            h5py.File(source, "r") as f:
        info = parse_header(dset.read_xml_header(), source)
        lines = _collect(_acquisitions(f, group, source), info.encoded_matrix[0], source)
        n_t = _contrasts(info, lines, source)
        t, times_source = _times(info, n_t, times, source)
        kspace, mask, slices = _grid(info, lines, n_t, source)
        maps = _read_coil_maps(dset, (len(slices), kspace.shape[2], kspace.shape[3], info.recon_matrix[0]), source)
    check_kspace_values(torch.from_numpy(kspace), source)
    whitener, noise_meta = _whitener(lines, info, source)
    if whitener is not None:
        kspace = np.einsum("dc,stcyx->stdyx", whitener, kspace)
        maps = None if maps is None else np.einsum("dc,scyx->sdyx", whitener, maps)
    k = torch.from_numpy(kspace)
    n_x = info.recon_matrix[0]
    if n_x < lines.n_x:
        k = remove_readout_oversampling(k, n_x)
    repeats = [n for n in lines.counts.values() if n > 1]
    header: dict[str, Any] = {
        "format": "ismrmrd", "source": source, "ismrmrd_group": group,
        "matrix": (int(k.shape[-2]), int(k.shape[-1])),
        "encoded_matrix": info.encoded_matrix, "recon_matrix": info.recon_matrix,
        "fov_mm": info.recon_fov_mm, "encoded_fov_mm": info.encoded_fov_mm,
        "field_strength_T": info.field_strength_T,
        **noise_meta,
        "oversampling_removed": n_x < lines.n_x, "readout_oversampling": lines.n_x / n_x,
        "ti_ms": list(info.ti_ms), "times_s": t.tolist(), "times_source": times_source,
        "n_slices": len(slices), "slice_indices": slices, "n_contrasts": n_t, "n_coils": int(k.shape[2]),
        "ky_center": info.ky_center, "center_samples": sorted(lines.centers),
        "calibration_only_lines": lines.calibration_only,
        "calibration_and_imaging_lines": lines.calibration_and_imaging,
        "repeated_lines_averaged": len(repeats), "max_repeats": max(repeats, default=1),
        "partial_readout_lines": lines.partial_lines, "skipped_acquisitions": dict(lines.skipped),
    }
    mask_t = torch.from_numpy(mask)[..., None].expand(*mask.shape, k.shape[-1]).clone()
    return RawT1Data(kspace=k.to(torch.complex64), mask=mask_t, times=t.float(), header=header,
                     coil_maps=None if maps is None else torch.from_numpy(maps).to(torch.complex64))
