"""The container every raw-data reader returns, and the checks all readers share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["RawT1Data", "check_times", "check_kspace_values", "MS_THRESHOLD_S"]

#: saturation times above this many seconds are taken for milliseconds and refused
MS_THRESHOLD_S = 100.0


@dataclass(frozen=True)
class RawT1Data:
    """Multi-contrast Cartesian k-space of one file, in the project's conventions.

    Attributes
    ----------
    kspace : torch.Tensor
        ``(S, T, C, Y, X)`` complex64: S slices, T saturation times, C coils, Y phase-encode lines,
        X readout samples, on the full grid of the centred orthonormal FFT (k = 0 at index
        ``(Y // 2, X // 2)``), zero where not sampled.
    mask : torch.Tensor
        ``(S, T, Y, X)`` bool, True where a line was sampled.
    times : torch.Tensor
        ``(T,)`` float32 saturation times in seconds.
    header : dict
        Plain dict of what was read and done (see :mod:`pinqi.io`): ``format``, ``source``,
        ``matrix`` (Y, X), ``fov_mm``, ``field_strength_T``, ``noise_prewhitened``,
        ``oversampling_removed``, ``ti_ms``, ``times_source`` and format-specific entries.
    coil_maps : torch.Tensor or None
        ``(S, C, Y, X)`` complex64 if the file carries coil maps (in the coil basis of
        ``kspace``, i.e. whitened too when the k-space was prewhitened), else None.
    """

    kspace: torch.Tensor
    mask: torch.Tensor
    times: torch.Tensor
    header: dict[str, Any]
    coil_maps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        k, m, t = self.kspace, self.mask, self.times
        if not isinstance(k, torch.Tensor) or k.ndim != 5 or k.dtype != torch.complex64:
            got = f"{tuple(k.shape)} {k.dtype}" if isinstance(k, torch.Tensor) else type(k).__name__
            raise ValueError(f"kspace must be a complex64 tensor (S, T, C, Y, X); got {got}")
        s, n_t, c, y, x = k.shape
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != (s, n_t, y, x):
            got = f"{tuple(m.shape)} {m.dtype}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"mask must be a bool tensor of shape {(s, n_t, y, x)}; got {got}")
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n_t,) or t.is_complex():
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"times must be a real tensor of shape ({n_t},); got {got}")
        if not isinstance(self.header, dict):
            raise TypeError(f"header must be a dict; got {type(self.header).__name__}")
        cm = self.coil_maps
        if cm is not None and (not isinstance(cm, torch.Tensor) or tuple(cm.shape) != (s, c, y, x)
                               or cm.dtype != torch.complex64):
            got = f"{tuple(cm.shape)} {cm.dtype}" if isinstance(cm, torch.Tensor) else type(cm).__name__
            raise ValueError(f"coil_maps must be None or complex64 of shape {(s, c, y, x)}; got {got}")

    @property
    def n_slices(self) -> int:
        """Number of slices S."""
        return int(self.kspace.shape[0])

    @property
    def n_coils(self) -> int:
        """Number of coils C."""
        return int(self.kspace.shape[2])


def check_times(times: Any, n_contrasts: int, what: str) -> torch.Tensor:
    """Saturation times in seconds as a float32 ``(T,)`` tensor, or a ValueError.

    Parameters
    ----------
    times
        Sequence, array or tensor of T values in seconds.
    n_contrasts
        The number of contrasts T the data hold.
    what
        Where the times came from, for the error message (e.g. ``"times="``).

    Returns
    -------
    ``(T,)`` float64 tensor (readers store it as float32 in :class:`RawT1Data`).
    """
    if isinstance(times, torch.Tensor):
        arr = times.detach().cpu().numpy()
    elif isinstance(times, (Sequence, np.ndarray)) and not isinstance(times, (str, bytes)):
        arr = np.asarray(times)
    else:
        raise ValueError(f"{what} must be a sequence of {n_contrasts} saturation times in seconds; "
                         f"got {type(times).__name__}")
    if arr.dtype.kind not in "iuf" or arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D real sequence of saturation times in seconds; "
                         f"got shape {arr.shape} of {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.size != n_contrasts:
        raise ValueError(f"{what} must hold one saturation time per contrast ({n_contrasts}); "
                         f"got {arr.size}: {arr.tolist()}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what} must be finite and >= 0 seconds; got {arr.tolist()}")
    if np.any(arr > MS_THRESHOLD_S):
        raise ValueError(f"{what} must be in seconds; got {arr.tolist()}, values above {MS_THRESHOLD_S:g} "
                         "look like milliseconds (divide by 1000)")
    return torch.from_numpy(arr)


def check_kspace_values(kspace: torch.Tensor, source: str) -> None:
    """ValueError unless k-space is finite everywhere and not all zero.

    Parameters
    ----------
    kspace
        Complex tensor of any shape.
    source
        File name for the message.
    """
    finite = torch.isfinite(torch.view_as_real(kspace))
    if not bool(finite.all()):
        bad = int((~finite).any(-1).sum())
        raise ValueError(f"{source}: expected finite k-space; got {bad} NaN/Inf samples")
    if not bool((kspace != 0).any()):
        raise ValueError(f"{source}: expected k-space with signal; got all zeros")
