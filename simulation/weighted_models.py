"""Weighted-image signal models (real signal; parameters ``(PD, T1 [s], T2 [s])``).

Closed forms, with E1(t) = exp(−t / T1), E2(t) = exp(−t / T2), α the flip angle:

* :class:`SpinEcho` (SE / TSE): ``PD (1 − E1(TR)) E2(c·TE)``
* :class:`FLAIR`: ``|PD (1 − 2 E1(TI) + E1(TR)) E2(c·TE)|``
* :class:`SpoiledGRE` (FLASH): ``PD sin α (1 − E1(TR)) E2(TE) / (1 − cos α E1(TR))``
* :class:`InversionPreparedGRE` (simplified MP-RAGE): ``|PD sin α E2(TE) (1 − 2 E1(TI) + E1(TR))|``

``c`` is the effective-TE correction (``te_correction``): for turbo spin echo the contrast is
set by the echo that samples the k-space centre, so TE_eff = c·TE can model a mismatch between
the nominal and the effective echo time (c = 1: none).

Approximations, deliberately simple:

* T2* ≈ T2 in the GRE models (no separate T2' / R2' parameter);
* SE and FLAIR use the ``TE ≪ TR`` forms (no ``exp(−(TR − TE/2)/T1)`` refinement), ideal 90/180°
  pulses and an ideal inversion;
* :class:`InversionPreparedGRE` uses a single readout at TI, i.e. the inversion-recovery
  longitudinal magnetisation at TI read by one α pulse; TR is the time between inversions; the
  saturation of the readout train and its own recovery are ignored.

Magnitude and the null: FLAIR and the inversion-prepared GRE return magnitude images (as
scanners do) by default. ``|x|`` has a kink at the signal null (e.g. TI = T1 ln 2 for
TR ≫ T1), where its derivative jumps from −1 to +1 and its second derivative is undefined —
bad for the Gauss-Newton / Hessian-based fits of W2Q. We therefore use the smooth magnitude
``sqrt(x² + ε²)`` (``magnitude_eps`` = ε, default 1e-3 in PD units): it is ε at the null (where
a measured magnitude image has its Rician noise floor anyway), twice differentiable everywhere, and
exceeds ``|x|`` by less than ``ε² / (2|x|)`` away from it: 1.7e-5 at a white-matter FLAIR signal
of 0.03, where the earlier ``sqrt(x² + ε²) − ε`` was 0.001 (3 %) below ``|x|``. Set
``magnitude_eps=0`` for the exact ``|x|`` or ``magnitude=False`` for the signed real signal.

Linearity in PD (``linear_parameters``, used by fits to solve PD in closed form): the signed
models are linear in PD; the exact magnitude ``|PD g| = PD |g|`` is linear for PD >= 0
(``nonnegative_amplitude``); the smooth magnitude is not linear in PD, so a magnitude model with
``magnitude_eps > 0`` declares no linear parameter.
"""

from __future__ import annotations

import math

import torch

from .sequence_checks import (
    check_flair,
    check_inversion_prepared_gre,
    check_positive,
    check_spin_echo,
    check_spoiled_gre,
)
from .signal_base import SignalModel

__all__ = ["WeightedSignalModel", "SpinEcho", "FLAIR", "SpoiledGRE", "InversionPreparedGRE", "smooth_abs"]

TensorLike = torch.Tensor | float | list[float] | tuple[float, ...]


def smooth_abs(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``sqrt(x² + eps²)`` (``|x|`` for eps = 0): smooth, eps at 0, within ``eps² / (2|x|)`` of ``|x|``."""
    if eps == 0:
        return x.abs()
    return torch.sqrt(x * x + eps * eps)


class WeightedSignalModel(SignalModel):
    """Shared attributes of the real weighted-image models, ``p = (PD, T1 [s], T2 [s])``.

    ``per_sample=True`` makes 1-D sequence parameters one value per batch element ``(B,)``
    (a single contrast per sample) instead of one value per contrast ``(T,)``.
    """

    parameter_names = ("pd", "t1", "t2")
    parameter_units = ("a.u.", "s", "s")
    bounds = ((0.0, 0.05, 0.005), (2.0, 6.0, 3.0))
    initial_value = (0.8, 1.0, 0.1)
    complex_output = False

    @property
    def linear_parameters(self) -> tuple[int, ...]:  # type: ignore[override]
        """``(0,)``: PD enters linearly — except for the smooth magnitude ``sqrt(x² + ε²) − ε``
        (``magnitude=True``, ``magnitude_eps > 0``), which is not linear in PD: then ``()``."""
        return () if (self.magnitude and self.magnitude_eps > 0) else (0,)

    @property
    def nonnegative_amplitude(self) -> bool:  # type: ignore[override]
        """True for the exact magnitude (``magnitude_eps = 0``): ``|PD g| = PD |g|`` only for PD >= 0."""
        return self.magnitude and self.magnitude_eps == 0

    def _init_options(self, te_correction: float | torch.Tensor, magnitude: bool, magnitude_eps: float) -> None:
        check_positive("te_correction", te_correction)
        if isinstance(te_correction, torch.Tensor) and te_correction.numel() != 1:
            raise ValueError(f"te_correction must be a single factor; got shape {tuple(te_correction.shape)}")
        if not float(magnitude_eps) >= 0:
            raise ValueError(f"magnitude_eps must be >= 0; got {magnitude_eps}")
        self.te_correction = te_correction
        self.magnitude = bool(magnitude)
        self.magnitude_eps = float(magnitude_eps)

    @staticmethod
    def _e(t: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        return torch.exp(-t / tx)

    def _te(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.te_correction
        if isinstance(c, torch.Tensor):
            c = c.to(dtype=p.dtype, device=p.device)
        return seq["te"] * c

    def _mag(self, x: torch.Tensor) -> torch.Tensor:
        return smooth_abs(x, self.magnitude_eps) if self.magnitude else x


class SpinEcho(WeightedSignalModel):
    """Spin echo / turbo spin echo: ``PD (1 − exp(−TR/T1)) exp(−c·TE/T2)``.

    Parameters
    ----------
    tr, te : tensor or float
        Repetition and echo time in seconds (0 <= TE < TR); scalar, ``(T,)``, ``(B, T)`` (or
        ``(B,)`` with ``per_sample=True``); broadcast together (e.g. one TR, several TEs).
    te_correction : float
        Effective-TE factor c > 0 (TSE), default 1.
    per_sample : bool
        Read 1-D sequence parameters as ``(B,)`` (one contrast per sample).
    """

    def __init__(
        self, tr: TensorLike, te: TensorLike, te_correction: float = 1.0, *, per_sample: bool = False
    ) -> None:
        super().__init__(per_sample=per_sample, tr=tr, te=te)
        check_spin_echo(self._sequence["tr"], self._sequence["te"], te_correction)
        self._init_options(te_correction, magnitude=False, magnitude_eps=0.0)

    def _signal(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        pd, t1, t2 = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        return pd * -torch.expm1(-seq["tr"] / t1) * self._e(self._te(p, seq), t2)


class FLAIR(WeightedSignalModel):
    """Fluid-attenuated inversion recovery (inversion-prepared TSE).

    ``|PD (1 − 2 exp(−TI/T1) + exp(−TR/T1)) exp(−c·TE/T2)|`` with the smooth magnitude
    described in the module docstring.

    Parameters
    ----------
    tr, te, ti : tensor or float
        Seconds; 0 <= TE < TR, 0 < TI < TR. Shapes as for :class:`SpinEcho`.
    te_correction : float
        Effective-TE factor c > 0.
    magnitude : bool
        Return the (smooth) magnitude (default) or the signed signal.
    magnitude_eps : float
        ε of ``sqrt(x² + ε²) − ε``; 0 gives the exact, non-smooth ``|x|``.
    per_sample : bool
        Read 1-D sequence parameters as ``(B,)``.
    """

    def __init__(
        self,
        tr: TensorLike,
        te: TensorLike,
        ti: TensorLike,
        te_correction: float = 1.0,
        *,
        magnitude: bool = True,
        magnitude_eps: float = 1e-3,
        per_sample: bool = False,
    ) -> None:
        super().__init__(per_sample=per_sample, tr=tr, te=te, ti=ti)
        check_flair(self._sequence["tr"], self._sequence["te"], self._sequence["ti"], te_correction)
        self._init_options(te_correction, magnitude, magnitude_eps)

    def _signal(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        pd, t1, t2 = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        mz = 1 - 2 * self._e(seq["ti"], t1) + self._e(seq["tr"], t1)
        return self._mag(pd * mz * self._e(self._te(p, seq), t2))


class SpoiledGRE(WeightedSignalModel):
    """Spoiled gradient echo (FLASH) steady state, T2* ≈ T2.

    ``PD sin α (1 − E1) exp(−TE/T2) / (1 − cos α E1)``, E1 = exp(−TR/T1).

    Parameters
    ----------
    tr, te : tensor or float
        Seconds, 0 <= TE < TR.
    flip_angle_deg : tensor or float
        Flip angle α in degrees, (0, 180].
    per_sample : bool
        Read 1-D sequence parameters as ``(B,)``.
    """

    def __init__(
        self, tr: TensorLike, te: TensorLike, flip_angle_deg: TensorLike, *, per_sample: bool = False
    ) -> None:
        super().__init__(per_sample=per_sample, tr=tr, te=te, flip_angle_deg=flip_angle_deg)
        check_spoiled_gre(self._sequence["tr"], self._sequence["te"], self._sequence["flip_angle_deg"])
        self._init_options(1.0, magnitude=False, magnitude_eps=0.0)

    def _signal(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        pd, t1, t2 = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        alpha = seq["flip_angle_deg"] * (math.pi / 180)
        e1 = self._e(seq["tr"], t1)
        return pd * torch.sin(alpha) * (1 - e1) * self._e(seq["te"], t2) / (1 - torch.cos(alpha) * e1)


class InversionPreparedGRE(WeightedSignalModel):
    """Inversion-prepared spoiled GRE (MP-RAGE-like, single readout at TI), T2* ≈ T2.

    ``|PD sin α exp(−TE/T2) (1 − 2 exp(−TI/T1) + exp(−TR/T1))|`` with the smooth magnitude.

    Parameters
    ----------
    tr : tensor or float
        Time between inversions in seconds (> TI, > TE).
    te, ti : tensor or float
        Echo and inversion time in seconds.
    flip_angle_deg : tensor or float
        Readout flip angle α in degrees, (0, 180].
    magnitude, magnitude_eps, per_sample
        As for :class:`FLAIR`.
    """

    def __init__(
        self,
        tr: TensorLike,
        te: TensorLike,
        ti: TensorLike,
        flip_angle_deg: TensorLike,
        *,
        magnitude: bool = True,
        magnitude_eps: float = 1e-3,
        per_sample: bool = False,
    ) -> None:
        super().__init__(per_sample=per_sample, tr=tr, te=te, ti=ti, flip_angle_deg=flip_angle_deg)
        s = self._sequence
        check_inversion_prepared_gre(s["tr"], s["te"], s["ti"], s["flip_angle_deg"])
        self._init_options(1.0, magnitude, magnitude_eps)

    def _signal(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        pd, t1, t2 = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        alpha = seq["flip_angle_deg"] * (math.pi / 180)
        mz = 1 - 2 * self._e(seq["ti"], t1) + self._e(seq["tr"], t1)
        return self._mag(pd * torch.sin(alpha) * self._e(seq["te"], t2) * mz)
