"""Small inputs shared by the pinqi.io tests."""

from __future__ import annotations

import h5py
import ismrmrd
import numpy as np
import torch


def line_data(shape: tuple[int, int, int, int, int], seed: int = 0,
              keep: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Random complex k-space ``(S, T, C, Y, X)`` zero outside a random line mask ``(S, T, Y, X)``.

    The centre line (``Y // 2``) is always sampled so that every contrast has lines.
    """
    g = torch.Generator().manual_seed(seed)
    s, t, c, y, x = shape
    lines = torch.rand(s, t, y, 1, generator=g) < keep
    lines[:, :, y // 2] = True
    mask = lines.expand(s, t, y, x).clone()
    kspace = torch.randn(shape, dtype=torch.complex64, generator=g) * mask[:, :, None]
    return kspace, mask


def ismrmrd_xml(*, enc_x: int, recon_x: int, y: int, ky_center: int, ky_max: int, n_contrasts: int,
                slice_max: int = 0, ti_ms: tuple[float, ...] | None = None, trajectory: str = "cartesian") -> str:
    """A hand-written ISMRMRD header (independent of pinqi.io's writer)."""
    ti = "".join(f"<TI>{v}</TI>" for v in (ti_ms or ()))
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <experimentalConditions><H1resonanceFrequency_Hz>63864000</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace><matrixSize><x>{enc_x}</x><y>{y}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{2.5 * enc_x}</x><y>{2.5 * y}</y><z>6</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>{recon_x}</x><y>{y}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{2.5 * recon_x}</x><y>{2.5 * y}</y><z>6</z></fieldOfView_mm></reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1>
        <minimum>0</minimum><maximum>{ky_max}</maximum><center>{ky_center}</center>
      </kspace_encoding_step_1>
      <slice><minimum>0</minimum><maximum>{slice_max}</maximum><center>0</center></slice>
      <contrast><minimum>0</minimum><maximum>{n_contrasts - 1}</maximum><center>0</center></contrast>
    </encodingLimits>
    <trajectory>{trajectory}</trajectory>
  </encoding>
  <sequenceParameters>{ti}</sequenceParameters>
</ismrmrdHeader>
"""


def acquisition(data: np.ndarray, *, s: int = 0, c: int = 0, line: int = 0, flags=(), center: int | None = None,
                average: int = 0) -> ismrmrd.Acquisition:
    """One ISMRMRD acquisition ``(C, Ns)`` with the given idx, flags and centre sample (default Ns // 2)."""
    center = data.shape[1] // 2 if center is None else center
    acq = ismrmrd.Acquisition.from_array(np.asarray(data).astype(np.complex64), center_sample=center,
                                         sample_time_us=4.0)
    acq.idx.slice, acq.idx.contrast, acq.idx.kspace_encode_step_1, acq.idx.average = s, c, line, average
    for f in flags:
        acq.set_flag(f)
    return acq


def write_file(path, xml: str, acquisitions) -> None:
    """Write a header and acquisitions with the ismrmrd package alone."""
    with ismrmrd.Dataset(str(path), "dataset", mode="w") as dset:
        dset.write_xml_header(xml.encode())
        for acq in acquisitions:
            dset.append_acquisition(acq)


def write_fastmri(path, kspace: np.ndarray, times=None, **datasets) -> None:
    """A fastMRI-style file: ``/kspace``, attribute ``saturation_times`` (if given), other datasets."""
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if times is not None:
            f.attrs["saturation_times"] = np.asarray(times)
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
