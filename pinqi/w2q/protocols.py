"""The protocols W2Q reads: contrast slots, sequence types, their simulated ranges and defaults.

Contrast slots ``CONTRASTS`` = (t1w, t2w, flair), in the order of the image channels; sequence
types ``SEQUENCE_TYPES`` = (spin_echo, spoiled_gre, flair), the ids of ``sequence_types``. A
protocol of ``T`` contrasts is ``sequence_params`` ``(B, T, 4)`` = (TR [s], TE [s], TI [s] (0 if
none), flip angle [deg]) with ``sequence_types`` ``(B, T)``. The ranges protocols are simulated
from, :class:`ProtocolRanges`, belong to the simulation and are re-exported here.
"""

from __future__ import annotations

import torch

from simulation.protocol_ranges import CONTRASTS, SEQUENCE_TYPES, ProtocolRanges

__all__ = ["CONTRASTS", "SEQUENCE_TYPES", "ProtocolRanges", "PARAMETERS", "DEFAULT_PROTOCOL", "DEFAULT_TYPES",
           "check_protocol"]

#: The maps W2Q estimates, in the order of its output channels: PD [a.u.], T1 [s], T2 [s].
PARAMETERS: tuple[str, ...] = ("pd", "t1", "t2")
#: A clinical-like protocol (TR, TE, TI, FA) per slot, used for missing contrasts' placeholders.
DEFAULT_PROTOCOL: tuple[tuple[float, float, float, float], ...] = (
    (0.6, 0.012, 0.0, 90.0), (5.0, 0.1, 0.0, 90.0), (9.0, 0.12, 2.4, 90.0),
)
DEFAULT_TYPES: tuple[int, ...] = (0, 0, 2)


def check_protocol(sequence_params: torch.Tensor, sequence_types: torch.Tensor) -> None:
    """Refuse a protocol that is not ``(B, T, 4)`` parameters with ``(B, T)`` integer type ids."""
    if not isinstance(sequence_params, torch.Tensor) or sequence_params.ndim != 3 or sequence_params.shape[-1] != 4:
        got = tuple(sequence_params.shape) if isinstance(sequence_params, torch.Tensor) else type(sequence_params).__name__
        raise ValueError(f"sequence_params must have shape (B, T, 4) = (TR [s], TE [s], TI [s], FA [deg]); got {got}")
    if not isinstance(sequence_types, torch.Tensor) or sequence_types.shape != sequence_params.shape[:2]:
        got = tuple(sequence_types.shape) if isinstance(sequence_types, torch.Tensor) else type(sequence_types).__name__
        raise ValueError(f"sequence_types must have shape (B, T) = {tuple(sequence_params.shape[:2])}; got {got}")
    if sequence_types.is_floating_point() or sequence_types.is_complex():
        raise TypeError(f"sequence_types must be an integer tensor of ids into {SEQUENCE_TYPES}; got {sequence_types.dtype}")
    if sequence_types.numel() and not bool(((sequence_types >= 0) & (sequence_types < len(SEQUENCE_TYPES))).all()):
        raise ValueError(f"sequence_types must be ids in [0, {len(SEQUENCE_TYPES)}) for {SEQUENCE_TYPES}; got {sequence_types.tolist()}")
