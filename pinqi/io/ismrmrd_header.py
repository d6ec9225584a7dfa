"""The parts of an ISMRMRD XML header a Cartesian saturation-recovery reader needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ismrmrd
import ismrmrd.xsd

__all__ = ["EncodingInfo", "parse_header"]


@dataclass(frozen=True)
class EncodingInfo:
    """Geometry and timing of encoding 0 of an ISMRMRD header.

    Attributes
    ----------
    encoded_matrix, recon_matrix : (int, int, int)
        ``(x, y, z)`` of ``encodedSpace`` / ``reconSpace`` (x = readout, y = phase encode).
    encoded_fov_mm, recon_fov_mm : (float, float, float)
        Field of view ``(x, y, z)`` in mm.
    ky_center : int
        ``encodingLimits.kspace_encoding_step_1.center``: the line index with k_y = 0
        (``encoded_matrix[1] // 2`` when the header has no limit).
    n_contrasts : int or None
        ``encodingLimits.contrast.maximum + 1`` if given.
    ti_ms : tuple of float
        ``sequenceParameters.TI`` in ms (empty if absent).
    field_strength_T : float or None
        ``acquisitionSystemInformation.systemFieldStrength_T``.
    relative_noise_bandwidth : float or None
        ``acquisitionSystemInformation.relativeReceiverNoiseBandwidth`` (recorded, not applied).
    """

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    ky_center: int
    n_contrasts: int | None
    ti_ms: tuple[float, ...]
    field_strength_T: float | None
    relative_noise_bandwidth: float | None


def _xyz(v: Any, cast: type) -> tuple[Any, Any, Any]:
    return cast(v.x), cast(v.y), cast(v.z)


def parse_header(xml: bytes | str, source: str) -> EncodingInfo:
    """Parse and check an ISMRMRD XML header.

    Parameters
    ----------
    xml
        The ``/dataset/xml`` string.
    source
        File name for error messages.

    Returns
    -------
    EncodingInfo

    Raises
    ------
    ValueError
        Unparsable XML, no encoding, a non-Cartesian trajectory or 3-D encoding.
    """
    try:
        hdr = ismrmrd.xsd.CreateFromDocument(xml)
    except Exception as exc:  # xsdata raises several types
        raise ValueError(f"{source}: expected a valid ISMRMRD XML header; parsing failed: {exc}") from exc
    if not hdr.encoding:
        raise ValueError(f"{source}: expected at least one <encoding> in the ISMRMRD header; got none")
    enc = hdr.encoding[0]
    traj = enc.trajectory.value if hasattr(enc.trajectory, "value") else str(enc.trajectory)
    if traj != "cartesian":
        raise ValueError(f"{source}: expected a Cartesian trajectory; the header says {traj!r}")
    encoded = _xyz(enc.encodedSpace.matrixSize, int)
    recon = _xyz(enc.reconSpace.matrixSize, int)
    if encoded[2] > 1:
        raise ValueError(f"{source}: expected 2-D encoding (encodedSpace z = 1); got matrix {encoded}")
    if recon[0] > encoded[0]:
        raise ValueError(f"{source}: expected reconSpace x <= encodedSpace x; got {recon[0]} > {encoded[0]}")
    limits = enc.encodingLimits
    ky = limits.kspace_encoding_step_1 if limits is not None else None
    contrast = limits.contrast if limits is not None else None
    seq = hdr.sequenceParameters
    system = hdr.acquisitionSystemInformation
    return EncodingInfo(
        encoded_matrix=encoded,
        recon_matrix=recon,
        encoded_fov_mm=_xyz(enc.encodedSpace.fieldOfView_mm, float),
        recon_fov_mm=_xyz(enc.reconSpace.fieldOfView_mm, float),
        ky_center=int(ky.center) if ky is not None else encoded[1] // 2,
        n_contrasts=int(contrast.maximum) + 1 if contrast is not None else None,
        ti_ms=tuple(float(v) for v in (seq.TI if seq is not None else [])),
        field_strength_T=(float(system.systemFieldStrength_T)
                          if system is not None and system.systemFieldStrength_T is not None else None),
        relative_noise_bandwidth=(float(system.relativeReceiverNoiseBandwidth) if system is not None
                                  and system.relativeReceiverNoiseBandwidth is not None else None),
    )
