"""Raw data in: Cartesian multi-contrast (saturation-recovery) k-space from ISMRMRD, fastMRI-style
HDF5 or the project's own HDF5, and an ISMRMRD writer.

This docstring is the one place where the accepted layouts are described.

What you get
------------
:func:`read_raw` detects the layout from the file content (not its name) and returns a frozen
:class:`RawT1Data`:

- ``kspace`` ``(S, T, C, Y, X)`` complex64 — slices, saturation times, coils, phase-encode lines,
  readout — on the full grid of the project's centred orthonormal FFT (:mod:`operators.fft`):
  k = 0 at index ``(Y // 2, X // 2)``; zero where not sampled. It feeds
  ``operators.MultiCoilCartesianOp(csm, mask)`` directly.
- ``mask`` ``(S, T, Y, X)`` bool, True on sampled lines (whole lines: a partial echo leaves zero
  samples on a line whose mask is True).
- ``times`` ``(T,)`` float32 saturation times in **seconds**; ``times=`` (seconds) overrides the
  file's.
- ``header``: a plain dict of what was read and done. Always: ``format`` (``"ismrmrd"``,
  ``"fastmri"``, ``"pinqi-h5"``), ``source`` (the file), ``matrix`` (Y, X), ``fov_mm`` (x, y, z or
  None), ``field_strength_T`` (or None), ``noise_prewhitened``, ``oversampling_removed``,
  ``ti_ms`` (per contrast), ``times_s``, ``times_source`` (``"header"``/``"file"``/``"argument"``),
  ``n_slices``, ``n_contrasts``, ``n_coils``. ISMRMRD adds the encoded/recon matrices and FOVs,
  noise-scan statistics and dwell times, ``ky_center``, ``center_samples``, calibration-line
  counts, ``repeated_lines_averaged``/``max_repeats``, ``partial_readout_lines``,
  ``skipped_acquisitions``.
- ``coil_maps`` ``(S, C, Y, X)`` complex64 if the file carries them, else None.

Errors: a missing file is a ``FileNotFoundError``; everything else (not HDF5, corrupt or truncated
HDF5, HDF5 of another layout, missing or miscounted saturation times, times that look like ms,
non-Cartesian or 3-D data, NaN/Inf samples, all-zero k-space, inconsistent shapes) is a
``ValueError`` whose one sentence names what was expected and what came.

(a) ISMRMRD (https://ismrmrd.github.io), read with the ``ismrmrd`` package
--------------------------------------------------------------------------------
Recognised by a top-level group (normally ``/dataset``) holding ``xml``. Encoding 0 only, 2-D
(``encodedSpace.matrixSize.z = 1``), ``trajectory = cartesian``, no per-sample trajectory.

- Acquisitions: contrast ``idx.contrast`` -> T, phase-encode line ``idx.kspace_encode_step_1`` ->
  Y, slice ``idx.slice`` -> S (distinct slice indices in increasing order; ``header
  ["slice_indices"]``). T is ``encodingLimits.contrast.maximum + 1`` (else the largest contrast
  present + 1); every contrast must have lines.
- Saturation times: ``sequenceParameters.TI``, one per contrast, in **ms** (ISMRMRD's unit),
  converted to s. Missing TI without ``times=``, or a count different from T, is an error.
- Centres: line ``l`` goes to row ``l - encodingLimits.kspace_encoding_step_1.center + Y // 2``
  with ``Y = encodedSpace.matrixSize.y`` (partial Fourier leaves rows empty); readout sample ``i``
  goes to column ``i - acq.center_sample + X_enc // 2`` with ``X_enc = encodedSpace.matrixSize.x``
  (``discard_pre``/``discard_post`` samples dropped). Anything that falls off the grid is an error.
- Noise prewhitening: acquisitions flagged ``ACQ_IS_NOISE_MEASUREMENT`` give the coil noise
  covariance ``Σ = (1/N) Σ n nᴴ`` (zero mean assumed); every image line is multiplied by
  ``sqrt(r) L⁻¹`` with ``Σ = L Lᴴ`` (Cholesky) and ``r`` = image dwell / noise dwell
  (``sample_time_us``; noise variance scales with bandwidth = 1 / dwell; ``r = 1`` when a dwell
  time is 0, flagged ``noise_dwell_ratio_assumed``). The whitened data thus have unit noise
  variance per coil and sample, uncorrelated between coils. ``relativeReceiverNoiseBandwidth``
  is recorded but not applied (a global scale, which every model here is equivariant to).
  Coil maps in the file are whitened with the same matrix.
- Readout oversampling (``encodedSpace`` x > ``reconSpace`` x): centred IFFT along the readout,
  keep the central ``reconSpace`` x columns, centred FFT back (:mod:`pinqi.io.readout`).
  Phase-encode oversampling is not removed (Y stays ``encodedSpace`` y).
- Lines flagged ``ACQ_IS_PARALLEL_CALIBRATION`` or ``..._AND_IMAGING`` are used like any line.
  Repeated lines of the same (slice, contrast, line) — averages, repetitions, calibration
  duplicates — are **averaged** (``header["repeated_lines_averaged"]``, ``["max_repeats"]``).
- Navigator, phase-correction, dummy, feedback, surface-coil and phase-stabilisation
  acquisitions are skipped and counted; reversed (EPI) readouts are refused.
- pinqi extension: an ISMRMRD array ``coil_maps`` ``(S, C, Y, X)`` complex, if present.

(b) fastMRI-style HDF5
----------------------
Recognised by a root dataset ``/kspace`` (and no ISMRMRD group or pinqi ``format``):

- ``/kspace`` ``(S, T, C, Y, X)`` or ``(T, C, Y, X)`` complex, already on the centred grid;
- attribute ``saturation_times``: T values in **seconds** (values > 100 are refused as ms);
- optional ``/mask`` ``(S, T, Y, X)`` or ``(T, Y, X)`` bool/0-1 (samples outside it are set to
  zero and counted in ``header["samples_zeroed_outside_mask"]``); without it a line is sampled
  where any coil has any non-zero sample;
- optional ``/csm`` ``(S, C, Y, X)`` or ``(C, Y, X)`` complex coil maps.

(c) pinqi HDF5 (:mod:`simulation.h5io`, attribute ``format = "pinqi-t1-synthetic-v1"``)
-----------------------------------------------------------------------------------------
Cartesian files only (``/trajectory`` = radial is refused). Each stored sample becomes a slice:
``/kspace`` ``(N, T, C, Y, X)``, ``/mask`` ``(N, T, Y, X)``, ``/times`` ``(N, T)`` s (identical
for all samples), ``/csm`` ``(N, C, Y, X)`` as coil maps. Read with
:class:`simulation.h5io.H5T1Dataset`.

Writing
-------
:func:`write_ismrmrd` writes valid ISMRMRD (XML header with encoded/recon spaces, encoding
limits incl. contrast and slice limits and centres, ``sequenceParameters.TI`` in ms, field
strength; one acquisition per sampled line with idx, first/last flags, ``center_sample = X_enc //
2``, active channels, ``sample_time_us``; optional noise scans and calibration flags; ``oversampling``
zero-pads each line in image space). It writes to a ``tempfile.mkstemp`` name in the destination
folder and renames on success.
"""

from __future__ import annotations

from .ismrmrd_writer import write_ismrmrd
from .read import detect_format, read_raw
from .types import RawT1Data

__all__ = ["RawT1Data", "detect_format", "read_raw", "write_ismrmrd"]
