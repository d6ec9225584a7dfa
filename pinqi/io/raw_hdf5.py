"""Read plain-HDF5 k-space: the fastMRI-style layout and the project's own synthetic files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from simulation.h5io import H5T1Dataset, read_h5_attrs

from .types import RawT1Data, check_kspace_values, check_times

__all__ = ["read_fastmri", "read_pinqi_h5"]


def _as_slices(arr: np.ndarray, ndim: int, name: str, layout: str, source: str) -> np.ndarray:
    """Add the slice axis to a single-slice array; refuse any other number of dimensions."""
    if arr.ndim == ndim - 1:
        return arr[None]
    if arr.ndim != ndim:
        raise ValueError(f"{source}: expected {name} of shape {layout} (or without the slice axis); "
                         f"got {arr.shape}")
    return arr


def _line_mask(kspace: np.ndarray) -> np.ndarray:
    """``(S, T, Y, X)`` bool: a line is sampled if any coil has any non-zero sample on it."""
    lines = np.any(kspace != 0, axis=(2, 4))
    return np.broadcast_to(lines[..., None], (*lines.shape, kspace.shape[-1])).copy()


def _optional_maps(f: h5py.File, shape: tuple[int, ...], source: str) -> torch.Tensor | None:
    if "csm" not in f:
        return None
    maps = _as_slices(np.asarray(f["csm"][()]), 4, "csm", "(S, C, Y, X)", source)
    if maps.shape != shape or not np.iscomplexobj(maps):
        raise ValueError(f"{source}: expected /csm complex of shape {shape}; got {maps.shape} {maps.dtype}")
    return torch.from_numpy(maps.astype(np.complex64))


def _header(fmt: str, source: str, shape: tuple[int, ...], t: torch.Tensor, times_source: str) -> dict[str, Any]:
    """The header entries every plain-HDF5 file gets (no geometry, no noise scans, no oversampling)."""
    n_s, n_t, n_c, n_y, n_x = shape
    return {"format": fmt, "source": source, "matrix": (n_y, n_x), "fov_mm": None, "field_strength_T": None,
            "noise_prewhitened": False, "oversampling_removed": False, "ti_ms": [1000.0 * v for v in t.tolist()],
            "times_s": t.tolist(), "times_source": times_source, "n_slices": n_s, "n_contrasts": n_t, "n_coils": n_c}


def _finish(kspace: np.ndarray, mask: np.ndarray, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64))
    check_kspace_values(k, source)
    return k, torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))


def read_fastmri(path: str | Path, *, times: Any = None) -> RawT1Data:
    """Read a fastMRI-style HDF5 file (layout in :mod:`pinqi.io`).

    Parameters
    ----------
    path
        File with dataset ``kspace`` ``(S, T, C, Y, X)`` or ``(T, C, Y, X)`` complex, attribute
        ``saturation_times`` in seconds, optional ``mask`` ``(S, T, Y, X)``/``(T, Y, X)`` and
        ``csm`` ``(S, C, Y, X)``/``(C, Y, X)``.
    times
        ``(T,)`` seconds, overrides the attribute.

    Returns
    -------
    RawT1Data
    """
    source = str(path)
    with h5py.File(source, "r") as f:
        raw = f["kspace"]
        if not isinstance(raw, h5py.Dataset) or raw.dtype.kind != "c":
            got = raw.dtype if isinstance(raw, h5py.Dataset) else type(raw).__name__
            raise ValueError(f"{source}: expected /kspace to be a complex dataset; got {got}")
        kspace = _as_slices(np.asarray(raw[()]), 5, "/kspace", "(S, T, C, Y, X)", source)
        check_kspace_values(torch.from_numpy(kspace), source)  # before masking can hide NaN/Inf
        n_s, n_t, n_c, n_y, n_x = kspace.shape
        ti_attr = f.attrs.get("saturation_times")
        has_mask = "mask" in f
        if has_mask:
            mask = _as_slices(np.asarray(f["mask"][()]), 4, "/mask", "(S, T, Y, X)", source)
            if mask.shape != (n_s, n_t, n_y, n_x) or mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
                raise ValueError(f"{source}: expected /mask of 0/1 or bool, shape {(n_s, n_t, n_y, n_x)}; "
                                 f"got {mask.shape} {mask.dtype}")
            mask = mask.astype(bool)
        else:
            mask = _line_mask(kspace)
        maps = _optional_maps(f, (n_s, n_c, n_y, n_x), source)
    if times is not None:
        t, times_source = check_times(times, n_t, "times="), "argument"
    elif ti_attr is None:
        raise ValueError(f"{source}: expected the attribute 'saturation_times' (seconds, one per contrast, "
                         f"{n_t}); got none (pass times= in seconds)")
    else:
        t, times_source = check_times(np.atleast_1d(ti_attr), n_t, f"{source}: attribute 'saturation_times'"), "file"
    outside = int(np.count_nonzero((kspace != 0) & ~mask[:, :, None]))
    k, m = _finish(np.where(mask[:, :, None], kspace, 0), mask, source)
    header = {**_header("fastmri", source, kspace.shape, t, times_source),
              "mask_source": "file" if has_mask else "non-zero lines", "samples_zeroed_outside_mask": outside}
    return RawT1Data(kspace=k, mask=m, times=t.float(), header=header, coil_maps=maps)


def read_pinqi_h5(path: str | Path, *, times: Any = None) -> RawT1Data:
    """Read the project's own synthetic HDF5 (:mod:`simulation.h5io`); samples become slices.

    Parameters
    ----------
    path
        File from :func:`simulation.h5io.write_t1_dataset_h5` (Cartesian).
    times
        ``(T,)`` seconds, overrides the file's ``/times``.

    Returns
    -------
    RawT1Data
        ``coil_maps`` from ``/csm`` when present.
    """
    source = str(path)
    attrs = read_h5_attrs(source)
    with h5py.File(source, "r") as f:
        available = set(f.keys())
    if "trajectory" in available:
        raise ValueError(f"{source}: expected Cartesian k-space; got a radial file (/trajectory present)")
    missing = sorted({"kspace", "mask"} - available)
    if missing:
        raise ValueError(f"{source}: expected datasets /kspace and /mask in a pinqi HDF5 file; missing {missing}")
    keys = ["kspace", "mask"] + [k for k in ("times", "csm") if k in available]
    ds = H5T1Dataset(source, keys=keys)
    try:
        if len(ds) == 0:
            raise ValueError(f"{source}: expected at least one sample; got an empty file")
        samples = [ds[i] for i in range(len(ds))]
    finally:
        ds.close()
    stacked = {k: torch.stack([s[k] for s in samples]) for k in keys}
    kspace = stacked["kspace"].numpy()
    if kspace.ndim != 5 or not np.iscomplexobj(kspace):
        raise ValueError(f"{source}: expected /kspace complex (N, T, C, Y, X); got {kspace.shape} {kspace.dtype}")
    n_s, n_t, n_c, n_y, n_x = kspace.shape
    mask = stacked["mask"].numpy().astype(bool)
    try:
        mask = np.broadcast_to(mask, (n_s, n_t, n_y, n_x)).copy()
    except ValueError as exc:
        raise ValueError(f"{source}: expected /mask broadcastable to {(n_s, n_t, n_y, n_x)}; got {mask.shape}") from exc
    if times is not None:
        t, times_source = check_times(times, n_t, "times="), "argument"
    elif "times" in stacked:
        per_sample = stacked["times"].numpy().reshape(n_s, -1)
        if not np.all(per_sample == per_sample[:1]):
            raise ValueError(f"{source}: expected the same /times for every sample; got {per_sample.tolist()}")
        t, times_source = check_times(per_sample[0], n_t, f"{source}: /times"), "file"
    else:
        raise ValueError(f"{source}: expected /times (N, T) seconds; got none (pass times= in seconds)")
    k, m = _finish(kspace, mask, source)
    header = {**_header("pinqi-h5", source, kspace.shape, t, times_source),
              "file_format": attrs.get("format"), "code_version": attrs.get("code_version")}
    maps = stacked["csm"].to(torch.complex64) if "csm" in stacked else None
    if maps is not None and tuple(maps.shape) != (n_s, n_c, n_y, n_x):
        raise ValueError(f"{source}: expected /csm of shape {(n_s, n_c, n_y, n_x)}; got {tuple(maps.shape)}")
    return RawT1Data(kspace=k, mask=m, times=t.float(), header=header, coil_maps=maps)
