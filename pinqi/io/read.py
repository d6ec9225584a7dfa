"""``read_raw``: detect the format of a raw-data file and read it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py

from simulation.h5io import FORMAT as PINQI_H5_FORMAT

from .raw_hdf5 import read_fastmri, read_pinqi_h5
from .raw_ismrmrd import find_ismrmrd_group, read_ismrmrd
from .types import RawT1Data

__all__ = ["read_raw", "detect_format"]


def detect_format(path: str | os.PathLike) -> tuple[str, str | None]:
    """Which of the supported layouts a file holds.

    Parameters
    ----------
    path
        An existing file.

    Returns
    -------
    ``("ismrmrd", group)``, ``("pinqi-h5", None)`` or ``("fastmri", None)``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not HDF5, unreadable (corrupt or truncated) HDF5, or HDF5 of another layout.
    """
    source = str(path)
    if Path(source).is_dir():
        raise ValueError(f"{source} is a folder; expected a raw data file (ISMRMRD, fastMRI-style or pinqi HDF5)")
    if not Path(source).is_file():
        raise FileNotFoundError(f"raw data file not found: {source!r}")
    if not h5py.is_hdf5(source):
        with open(source, "rb") as fh:
            head = fh.read(8)
        raise ValueError(f"{source}: expected an HDF5 file (ISMRMRD, fastMRI-style or pinqi); got a file that "
                         f"does not start with the HDF5 signature (first bytes {head!r})")
    try:
        with h5py.File(source, "r") as f:
            group = find_ismrmrd_group(f)
            if group is not None:
                return "ismrmrd", group
            if f.attrs.get("format") == PINQI_H5_FORMAT:
                return "pinqi-h5", None
            if "kspace" in f:
                return "fastmri", None
            keys = sorted(f.keys())
    except OSError as exc:
        raise ValueError(f"{source}: expected a readable HDF5 file; it is corrupt or truncated ({exc})") from exc
    raise ValueError(f"{source}: expected an ISMRMRD group with 'xml', a pinqi file (format "
                     f"{PINQI_H5_FORMAT!r}) or a fastMRI-style /kspace; got top-level keys {keys}")


def read_raw(path: str | os.PathLike, *, times: Any = None) -> RawT1Data:
    """Read Cartesian multi-contrast raw k-space from ISMRMRD, fastMRI-style or pinqi HDF5.

    The three layouts and what is done to the data are described in :mod:`pinqi.io`.

    Parameters
    ----------
    path
        The file; its format is detected from its content, not its name.
    times
        Optional ``(T,)`` saturation times in **seconds**, overriding those in the file (ISMRMRD
        ``sequenceParameters.TI`` in ms, fastMRI attribute ``saturation_times`` in s, pinqi
        ``/times`` in s).

    Returns
    -------
    RawT1Data
        ``kspace (S, T, C, Y, X)`` complex64, ``mask (S, T, Y, X)`` bool, ``times (T,)`` seconds,
        ``header`` dict, ``coil_maps (S, C, Y, X)`` or None.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a supported file, or its content is inconsistent (one sentence says what was expected
        and what came).
    """
    fmt, group = detect_format(path)
    try:
        if fmt == "ismrmrd":
            assert group is not None
            return read_ismrmrd(path, group, times=times)
        if fmt == "pinqi-h5":
            return read_pinqi_h5(path, times=times)
        return read_fastmri(path, times=times)
    except OSError as exc:  # h5py read errors inside a file that opened: truncated data
        raise ValueError(f"{path}: expected readable {fmt} data; reading failed, the file is corrupt or "
                         f"truncated ({exc})") from exc
