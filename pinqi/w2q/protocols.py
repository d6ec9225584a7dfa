"""The protocols W2Q reads: contrast slots, sequence types, their simulated ranges and defaults.

Contrast slots ``CONTRASTS`` = (t1w, t2w, flair), in the order of the image channels; sequence
types ``SEQUENCE_TYPES`` = (spin_echo, spoiled_gre, flair, mprage), the ids of
``sequence_types``. A protocol of ``T`` contrasts is ``sequence_params`` ``(B, T, 6)`` =
``PROTOCOL_FIELDS`` (TR [s], TE [s], TI [s] (0 if none), flip angle [deg], MP-RAGE readout
spacing τ [s] and readouts per inversion N (0 for the other types)) with ``sequence_types``
``(B, T)``; ``(B, T, 4)`` without the last two columns is accepted for protocols without MP-RAGE
(:func:`as_protocol`). The ranges protocols are simulated from, :class:`ProtocolRanges`, belong
to the simulation and are re-exported here.

Versions. ``data_version`` 1 (the W2Q weights trained before MP-RAGE): the legacy ranges, the
map-mixed partial volumes and :data:`simulation.tissues.TISSUE_RANGES`; 2: clinical ranges with
MP-RAGE, physical partial volumes and the literature prior :data:`simulation.tissues.
W2Q_TISSUE_PRIOR`; 3: as 2 with the T1/T2 targets of mixed voxels defined as water-weighted
relaxation rates (``relaxation_targets="water_rates"`` of :class:`simulation.WeightedImageDataset`),
which is what their physical signals encode (:func:`data_settings`).
"""

from __future__ import annotations

from typing import Any

import torch

from simulation.protocol_ranges import (
    CONTRASTS,
    LEGACY_PROTOCOL_RANGES,
    PROTOCOL_FIELDS,
    SEQUENCE_TYPES,
    ProtocolRanges,
)
from simulation.tissues import W2Q_TISSUE_PRIOR

__all__ = ["CONTRASTS", "SEQUENCE_TYPES", "PROTOCOL_FIELDS", "ProtocolRanges", "PARAMETERS", "DEFAULT_PROTOCOL",
           "DEFAULT_TYPES", "DATA_VERSIONS", "check_protocol", "as_protocol", "data_settings", "trained_ranges"]

#: The maps W2Q estimates, in the order of its output channels: PD [a.u.], T1 [s], T2 [s].
PARAMETERS: tuple[str, ...] = ("pd", "t1", "t2")
#: A clinical-like protocol (PROTOCOL_FIELDS) per slot, used for missing contrasts' placeholders.
DEFAULT_PROTOCOL: tuple[tuple[float, ...], ...] = (
    (0.6, 0.012, 0.0, 90.0, 0.0, 0.0), (5.0, 0.1, 0.0, 90.0, 0.0, 0.0), (9.0, 0.12, 2.4, 90.0, 0.0, 0.0),
)
DEFAULT_TYPES: tuple[int, ...] = (0, 0, 2)
#: The simulated-data versions (:func:`data_settings`).
DATA_VERSIONS: tuple[int, ...] = (1, 2, 3)


def trained_ranges(data_version: int) -> ProtocolRanges:
    """The protocol ranges a model of ``data_version`` was trained on (1: legacy, 2 and 3: clinical)."""
    if data_version not in DATA_VERSIONS:
        raise ValueError(f"data_version must be one of {DATA_VERSIONS}; got {data_version}")
    return LEGACY_PROTOCOL_RANGES if data_version == 1 else ProtocolRanges()


def data_settings(data_version: int) -> dict[str, Any]:
    """Keyword arguments of :class:`simulation.WeightedImageDataset` for a ``data_version``."""
    if data_version == 1:
        return {"protocols": LEGACY_PROTOCOL_RANGES, "partial_volume": "maps", "tissue_ranges": None}
    return {"protocols": trained_ranges(data_version), "partial_volume": "signal", "tissue_ranges": W2Q_TISSUE_PRIOR,
            "relaxation_targets": "water_rates" if data_version >= 3 else "fractions"}


def check_protocol(sequence_params: torch.Tensor, sequence_types: torch.Tensor) -> None:
    """Refuse a protocol that is not ``(B, T, 6)`` (or ``(B, T, 4)``) parameters with ``(B, T)`` integer type ids."""
    if not isinstance(sequence_params, torch.Tensor) or sequence_params.ndim != 3 or sequence_params.shape[-1] not in (4, 6):
        got = tuple(sequence_params.shape) if isinstance(sequence_params, torch.Tensor) else type(sequence_params).__name__
        raise ValueError(f"sequence_params must have shape (B, T, 6) = ({', '.join(PROTOCOL_FIELDS)}) or (B, T, 4) "
                         f"without MP-RAGE; got {got}")
    if not isinstance(sequence_types, torch.Tensor) or sequence_types.shape != sequence_params.shape[:2]:
        got = tuple(sequence_types.shape) if isinstance(sequence_types, torch.Tensor) else type(sequence_types).__name__
        raise ValueError(f"sequence_types must have shape (B, T) = {tuple(sequence_params.shape[:2])}; got {got}")
    if sequence_types.is_floating_point() or sequence_types.is_complex():
        raise TypeError(f"sequence_types must be an integer tensor of ids into {SEQUENCE_TYPES}; got {sequence_types.dtype}")
    if sequence_types.numel() and not bool(((sequence_types >= 0) & (sequence_types < len(SEQUENCE_TYPES))).all()):
        raise ValueError(f"sequence_types must be ids in [0, {len(SEQUENCE_TYPES)}) for {SEQUENCE_TYPES}; got {sequence_types.tolist()}")
    if sequence_params.shape[-1] == 4 and bool((sequence_types == SEQUENCE_TYPES.index("mprage")).any()):
        raise ValueError("an MP-RAGE contrast needs sequence_params (B, T, 6) with its readout spacing and readouts "
                         "per inversion; got (B, T, 4)")


def as_protocol(sequence_params: torch.Tensor, sequence_types: torch.Tensor) -> torch.Tensor:
    """The checked protocol as ``(B, T, 6)`` (a ``(B, T, 4)`` one padded with zero τ and N)."""
    check_protocol(sequence_params, sequence_types)
    if sequence_params.shape[-1] == 6:
        return sequence_params
    return torch.cat([sequence_params, sequence_params.new_zeros(*sequence_params.shape[:2], 2)], -1)
