"""Differentiable MR signal models.

T1-mapping models (this file; complex signal, parameters ``(Re M0, Im M0, R1 [1/s])``):

* :class:`SaturationRecovery` — ``M0 (1 − exp(−t R1))``
* :class:`InversionRecovery` — ``M0 (1 − 2 exp(−t R1))``, or with a finite repetition time
  ``M0 (1 − 2 exp(−t R1) + exp(−TR R1))``

Weighted-image models (:mod:`simulation.weighted_models`, re-exported here; real signal,
parameters ``(PD, T1 [s], T2 [s])``): :class:`SpinEcho`, :class:`FLAIR`, :class:`SpoiledGRE`,
:class:`InversionPreparedGRE`.

All are :class:`torch.nn.Module` s mapping ``p (B, P, Y, X)`` to ``(B, T, Y, X)``; see
:mod:`simulation.signal_base` for the accepted shapes of the sequence parameters (scalar, ``(T,)``
shared by the batch, ``(B, T)`` per sample) and :mod:`simulation.sequence_checks` for the
validation done at construction (seconds, not milliseconds; TE < TR; ...). Sequence parameters
passed as tensors that require grad receive gradients through the model. Validation runs once,
at construction: values changed in place later (e.g. by an optimiser) are not re-checked.
"""

from __future__ import annotations

import torch

from .sequence_checks import check_inversion_recovery, check_saturation_recovery
from .signal_base import SignalModel
from .weighted_models import FLAIR, InversionPreparedGRE, SpinEcho, SpoiledGRE, WeightedSignalModel

__all__ = [
    "SignalModel",
    "SaturationRecovery",
    "InversionRecovery",
    "WeightedSignalModel",
    "SpinEcho",
    "FLAIR",
    "SpoiledGRE",
    "InversionPreparedGRE",
]

TensorLike = torch.Tensor | float | list[float] | tuple[float, ...]


class _T1Model(SignalModel):
    """Shared attributes of the complex T1-mapping models."""

    parameter_names = ("re_m0", "im_m0", "r1")
    parameter_units = ("a.u.", "a.u.", "1/s")
    #: as in the PINQI paper: Re/Im M0 in [-2, 2], R1 in [-1, 20] 1/s
    bounds = ((-2.0, -2.0, -1.0), (2.0, 2.0, 20.0))
    initial_value = (1.0, 0.0, 1.0)
    complex_output = True
    #: M0 = Re M0 + i Im M0 multiplies a real recovery curve of R1
    linear_parameters = (0, 1)
    complex_amplitude = True

    @staticmethod
    def _complex(p: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """``M0 · factor`` with M0 = p[:, 0] + i p[:, 1]; factor real ``(B, T, Y, X)``."""
        return torch.complex(p[:, 0:1] * factor, p[:, 1:2] * factor)


class SaturationRecovery(_T1Model):
    """Saturation recovery: ``M0 (1 − exp(−t R1))``.

    Parameters
    ----------
    times : tensor or sequence of float
        Saturation (recovery) times in seconds, > 0: ``(T,)`` shared by the batch or ``(B, T)``
        per sample (a scalar means T = 1). Gradients reach a tensor that requires grad.

    Notes
    -----
    ``p = (Re M0, Im M0, R1)`` with R1 in 1/s; output complex ``(B, T, Y, X)``.
    """

    def __init__(self, times: TensorLike) -> None:
        super().__init__(times=times)
        check_saturation_recovery(self._sequence["times"])

    @property
    def times(self) -> torch.Tensor:
        """The saturation times as given (seconds)."""
        return self._sequence["times"]

    def _signal(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        r1 = p[:, 2:3]
        return self._complex(p, -torch.expm1(-seq["times"] * r1))


class InversionRecovery(_T1Model):
    """Inversion recovery: ``M0 (1 − 2 exp(−t R1))`` (ideal inversion, full recovery).

    Parameters
    ----------
    times : tensor or sequence of float
        Inversion times TI in seconds, > 0: ``(T,)`` or ``(B, T)``.
    tr : tensor or float, optional
        Repetition time in seconds (> every TI). If given, the incomplete recovery between
        repetitions adds ``+ exp(−TR R1)``: ``M0 (1 − 2 exp(−t R1) + exp(−TR R1))`` (readout at
        TI saturates the longitudinal magnetisation, TE ≪ TR). Scalar, ``(T,)``, ``(B, T)`` or
        ``(B, 1)``.

    Notes
    -----
    ``p = (Re M0, Im M0, R1)``; output complex and signed (no magnitude).
    """

    def __init__(self, times: TensorLike, tr: TensorLike | None = None) -> None:
        super().__init__(times=times, tr=tr)
        check_inversion_recovery(self._sequence["times"], self._sequence.get("tr"))

    @property
    def times(self) -> torch.Tensor:
        """The inversion times as given (seconds)."""
        return self._sequence["times"]

    @property
    def tr(self) -> torch.Tensor | None:
        """The repetition time as given (seconds), or None for full recovery."""
        return self._sequence.get("tr")

    def _signal(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        r1 = p[:, 2:3]
        factor = 1 - 2 * torch.exp(-seq["times"] * r1)
        if "tr" in seq:
            factor = factor + torch.exp(-seq["tr"] * r1)
        return self._complex(p, factor)
