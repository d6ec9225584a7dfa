"""The protocols of the weighted contrasts: their order, the sequence types, and the ranges a
simulated protocol is drawn from (:class:`ProtocolRanges`, used by
:class:`simulation.WeightedImageDataset` and by W2Q's held-out protocol bands).

A protocol row is :data:`PROTOCOL_FIELDS` = (TR [s], TE [s], TI [s] (0 if none), flip angle
[deg], readout spacing τ [s] (MP-RAGE, else 0), readouts per inversion N (MP-RAGE, else 0)); for
MP-RAGE TR is the time between inversions (BIDS ``RepetitionTimePreparation``).

The default ranges cover clinical practice at 3 T (vendor protocol guides and the protocols of
large studies such as ADNI and UK Biobank; approximate): 3-D spoiled-GRE T1w TR 4–30 ms;
spin-echo T1w TR 0.2–0.9 s; T2w TSE TE 60–400 ms (3-D variants reach ~0.4 s effective TE); FLAIR
TR 4.5–12 s, TI 1.6–3 s, TE up to 0.4 s (3-D); MP-RAGE TR_prep 1.7–2.6 s, TI 0.7–1.2 s,
α 6–12°, 150–256 readouts 5–10 ms apart. :data:`LEGACY_PROTOCOL_RANGES` are the narrower ranges
of the W2Q weights trained before MP-RAGE (no MP-RAGE, TR_SE >= 0.3 s, TR_GRE >= 6 ms, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTRASTS", "SEQUENCE_TYPES", "PROTOCOL_FIELDS", "ProtocolRanges", "Range", "LEGACY_PROTOCOL_RANGES"]

#: Sequence type ids used in ``sequence_types``.
SEQUENCE_TYPES: tuple[str, ...] = ("spin_echo", "spoiled_gre", "flair", "mprage")
#: The columns of a protocol row (seconds, degrees, a count).
PROTOCOL_FIELDS: tuple[str, ...] = ("tr", "te", "ti", "flip_angle", "tr_excitation", "n_readouts")
#: The contrasts, in the order of ``images``.
CONTRASTS: tuple[str, ...] = ("t1w", "t2w", "flair")

Range = tuple[float, float]


@dataclass(frozen=True)
class ProtocolRanges:
    """Uniform ranges of the sequence parameters (seconds, degrees) and of the nuisances.

    Attributes
    ----------
    t1w_gre_prob, t1w_mprage_prob : float
        Probabilities that the T1w image is a spoiled GRE or an MP-RAGE (otherwise a spin echo).
    t1w_se_tr, t1w_se_te : (float, float)
        T1w spin echo TR and TE [s].
    t1w_gre_tr, t1w_gre_te, t1w_gre_fa : (float, float)
        T1w spoiled GRE TR [s], TE [s], flip angle [deg].
    t2w_tr, t2w_te : (float, float)
        T2w (turbo) spin echo TR and TE [s].
    flair_tr, flair_te, flair_ti : (float, float)
        FLAIR TR, TE and TI [s].
    mprage_tr, mprage_te, mprage_ti, mprage_fa, mprage_n, mprage_tau : (float, float)
        MP-RAGE TR_prep [s], TE [s], TI [s], flip angle [deg], readouts per inversion and readout
        spacing τ [s] (τ is capped per draw so that the train fits between the inversions).
    scale : (float, float)
        Global intensity scale per contrast, log-uniform in this range.
    noise_rel : (float, float)
        Noise standard deviation per contrast relative to the mean noise-free signal in the brain.
    """

    t1w_gre_prob: float = 0.35
    t1w_mprage_prob: float = 0.35
    t1w_se_tr: Range = (0.2, 0.9)
    t1w_se_te: Range = (0.005, 0.02)
    t1w_gre_tr: Range = (0.004, 0.03)
    t1w_gre_te: Range = (0.0015, 0.0035)
    t1w_gre_fa: Range = (5.0, 40.0)
    t2w_tr: Range = (2.5, 8.0)
    t2w_te: Range = (0.06, 0.4)
    flair_tr: Range = (4.5, 12.0)
    flair_te: Range = (0.08, 0.4)
    flair_ti: Range = (1.6, 3.0)
    mprage_tr: Range = (1.7, 2.6)
    mprage_te: Range = (0.002, 0.0045)
    mprage_ti: Range = (0.7, 1.2)
    mprage_fa: Range = (6.0, 12.0)
    mprage_n: Range = (150.0, 256.0)
    mprage_tau: Range = (0.005, 0.01)
    scale: Range = (0.5, 2.0)
    noise_rel: Range = (0.005, 0.05)

    def __post_init__(self) -> None:
        probs = (self.t1w_gre_prob, self.t1w_mprage_prob)
        if not (min(probs) >= 0.0 and sum(probs) <= 1.0):
            raise ValueError(f"t1w_gre_prob and t1w_mprage_prob must be >= 0 with a sum <= 1; got {probs}")
        for name, value in self.__dict__.items():
            if name.endswith("_prob"):
                continue
            if len(value) != 2 or not 0 <= value[0] <= value[1]:
                raise ValueError(f"{name} must be a (low, high) pair with 0 <= low <= high; got {value!r}")
        if self.scale[0] <= 0:
            raise ValueError(f"scale must be positive; got {self.scale}")
        pairs = [("t1w_se_te", "t1w_se_tr"), ("t1w_gre_te", "t1w_gre_tr"), ("t2w_te", "t2w_tr"),
                 ("flair_te", "flair_tr"), ("flair_ti", "flair_tr"), ("mprage_te", "mprage_tau"),
                 ("mprage_ti", "mprage_tr")]
        for short, long in pairs:
            if getattr(self, short)[1] >= getattr(self, long)[0]:
                raise ValueError(
                    f"every {short} must be below every {long}; got {getattr(self, short)} and {getattr(self, long)}"
                )
        if not 0 < self.t1w_gre_fa[0] <= self.t1w_gre_fa[1] <= 180:
            raise ValueError(f"t1w_gre_fa must lie in (0, 180] degrees; got {self.t1w_gre_fa}")
        if self.mprage_n[0] < 1 or (self.mprage_n[0] // 2) * self.mprage_tau[0] >= self.mprage_ti[0]:
            raise ValueError(f"the shortest MP-RAGE train must start after the inversion: mprage_n {self.mprage_n}, "
                             f"mprage_tau {self.mprage_tau}, mprage_ti {self.mprage_ti}")

    def mprage_tau_cap(self, tr: float, ti: float, n: int) -> float:
        """Longest readout spacing [s] with the first readout after the inversion (``(N // 2) τ < TI``,
        with a 5 % margin) and the train over before the next one (``TI + (N − 1 − N // 2) τ <= TR``)."""
        return min(0.95 * ti / max(n // 2, 1), 0.99 * (tr - ti) / max(n - 1 - n // 2, 1))


#: The ranges of the W2Q weights trained before MP-RAGE and the clinical ranges (no MP-RAGE).
LEGACY_PROTOCOL_RANGES = ProtocolRanges(
    t1w_gre_prob=0.5, t1w_mprage_prob=0.0, t1w_se_tr=(0.3, 0.9), t1w_gre_tr=(0.006, 0.03), t1w_gre_te=(0.002, 0.005),
    t2w_te=(0.06, 0.15), flair_tr=(6.0, 12.0), flair_te=(0.08, 0.15), flair_ti=(1.8, 3.0))
