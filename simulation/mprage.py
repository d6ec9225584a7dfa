"""MP-RAGE: the steady-state signal of an inversion-prepared spoiled-GRE echo train.

One shot, repeated every ``TR_prep`` (BIDS ``RepetitionTimePreparation``):

1. an ideal inversion at t = 0 (``Mz → −Mz``);
2. free recovery until the first readout at ``t₀ = TI − k_c τ``;
3. ``N`` readouts (BIDS ``NumberShots``) at flip angle α, spacing τ (``RepetitionTimeExcitation``):
   before readout ``i`` the longitudinal magnetisation is ``M_i``; the readout takes
   ``sin α · M_i`` and leaves ``cos α · M_i``, which recovers for τ;
4. after the last readout (t = t₀ + (N − 1) τ) free recovery for ``TD = TR_prep − t₀ − (N − 1) τ``
   to the next inversion.

The image contrast is that of the centre readout ``k_c = N // 2`` (linear phase-encode order);
TI (BIDS ``InversionTime``) is measured from the inversion to that readout. With
``E = exp(−τ/T1)``, ``c = cos α``, the train obeys ``M_{i+1} = c E M_i + PD (1 − E)`` with the
fixed point ``M* = PD (1 − E) / (1 − c E)``, so ``M_i = M* + (M_0 − M*) (c E)^i``. Requiring
the magnetisation before the inversion to repeat (steady state) gives, with ``A = exp(−t₀/T1)``,
``D = exp(−TD/T1)`` and ``r = (c E)^{N−1}``,

``x = [PD (1 − D) + c D (M* (1 − r) + r PD (1 − A))] / (1 + c D r A)``,

``M_0 = PD − (x + PD) A`` and the signal

``S = sin α · exp(−TE/T2) · (M* + (M_0 − M*) (c E)^{k_c})``,

linear in PD (as the other weighted models, :mod:`simulation.weighted_models`). The magnitude is
taken as in :class:`~simulation.FLAIR` (smooth magnitude by default; ``magnitude=False`` for the
signed signal, which is linear in PD and declares it through ``linear_parameters``). T2* ≈ T2.
"""

from __future__ import annotations

import math

import torch

from .sequence_checks import check_mprage
from .weighted_models import TensorLike, WeightedSignalModel

__all__ = ["MPRAGE", "mprage_timing"]


def mprage_timing(tr: torch.Tensor, ti: torch.Tensor, tau: torch.Tensor, n: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre readout index ``k_c = N // 2`` and the two free-recovery delays [s].

    Parameters
    ----------
    tr, ti, tau, n : torch.Tensor
        TR_prep, TI, readout spacing τ [s] and readouts per inversion N (broadcastable).

    Returns
    -------
    (k_c, t0, td)
        Centre index, delay from the inversion to the first readout ``TI − k_c τ`` and from the
        last readout to the next inversion ``TR_prep − t0 − (N − 1) τ`` (seconds).
    """
    kc = torch.div(n, 2, rounding_mode="floor")
    t0 = ti - kc * tau
    return kc, t0, tr - t0 - (n - 1) * tau


class MPRAGE(WeightedSignalModel):
    """MP-RAGE steady-state signal at the centre readout (module docstring), T2* ≈ T2.

    Parameters
    ----------
    tr : tensor or float
        ``TR_prep`` [s], the time between inversions (BIDS ``RepetitionTimePreparation``).
    te : tensor or float
        Echo time of the readouts [s].
    ti : tensor or float
        Inversion to the centre readout [s] (BIDS ``InversionTime``).
    flip_angle_deg : tensor or float
        Readout flip angle α [deg].
    tr_excitation : tensor or float
        Readout spacing τ [s] (BIDS ``RepetitionTimeExcitation``).
    n_readouts : tensor or float
        Readouts per inversion N (BIDS ``NumberShots``), a positive integer.
    magnitude, magnitude_eps, per_sample
        As for :class:`~simulation.FLAIR`.

    Shapes as for the other weighted models: scalars, ``(T,)``, ``(B, T)`` (or ``(B,)`` with
    ``per_sample``); the signal is ``(B, T, Y, X)`` for parameters ``(B, 3, Y, X)``.
    """

    def __init__(self, tr: TensorLike, te: TensorLike, ti: TensorLike, flip_angle_deg: TensorLike,
                 tr_excitation: TensorLike, n_readouts: TensorLike, *, magnitude: bool = True,
                 magnitude_eps: float = 1e-3, per_sample: bool = False) -> None:
        super().__init__(per_sample=per_sample, tr=tr, te=te, ti=ti, flip_angle_deg=flip_angle_deg,
                         tr_excitation=tr_excitation, n_readouts=n_readouts)
        s = self._sequence
        check_mprage(s["tr"], s["te"], s["ti"], s["flip_angle_deg"], s["tr_excitation"], s["n_readouts"])
        self._init_options(1.0, magnitude, magnitude_eps)

    def _signal(self, p: torch.Tensor, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        pd, t1, t2 = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        alpha = seq["flip_angle_deg"] * (math.pi / 180)
        tau, n = seq["tr_excitation"], seq["n_readouts"]
        kc, t0, td = mprage_timing(seq["tr"], seq["ti"], tau, n)
        c = torch.cos(alpha)
        e = self._e(tau, t1)
        ce = c * e
        a, d = self._e(t0, t1), self._e(td, t1)
        m_star = pd * -torch.expm1(-tau / t1) / (1 - ce)
        r = ce ** (n - 1)
        x = (pd * -torch.expm1(-td / t1) + c * d * (m_star * (1 - r) + r * pd * -torch.expm1(-t0 / t1))) \
            / (1 + c * d * r * a)
        m0 = pd - (x + pd) * a
        mz = m_star + (m0 - m_star) * ce ** kc
        return self._mag(torch.sin(alpha) * self._e(seq["te"], t2) * mz)
