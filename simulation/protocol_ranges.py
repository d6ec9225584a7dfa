"""The protocols of the weighted contrasts: their order, the sequence types, and the ranges a
simulated protocol is drawn from (:class:`ProtocolRanges`, used by
:class:`simulation.WeightedImageDataset` and by W2Q's held-out protocol bands)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTRASTS", "SEQUENCE_TYPES", "ProtocolRanges", "Range"]

#: Sequence type ids used in ``sequence_types``.
SEQUENCE_TYPES: tuple[str, ...] = ("spin_echo", "spoiled_gre", "flair")
#: The contrasts, in the order of ``images``.
CONTRASTS: tuple[str, ...] = ("t1w", "t2w", "flair")

Range = tuple[float, float]


@dataclass(frozen=True)
class ProtocolRanges:
    """Uniform ranges of the sequence parameters (seconds, degrees) and of the nuisances.

    Attributes
    ----------
    t1w_gre_prob : float
        Probability that the T1w image is a spoiled GRE (otherwise a spin echo).
    t1w_se_tr, t1w_se_te : (float, float)
        T1w spin echo TR and TE [s].
    t1w_gre_tr, t1w_gre_te, t1w_gre_fa : (float, float)
        T1w spoiled GRE TR [s], TE [s], flip angle [deg].
    t2w_tr, t2w_te : (float, float)
        T2w (turbo) spin echo TR and TE [s].
    flair_tr, flair_te, flair_ti : (float, float)
        FLAIR TR, TE and TI [s].
    scale : (float, float)
        Global intensity scale per contrast, log-uniform in this range.
    noise_rel : (float, float)
        Noise standard deviation per contrast relative to the mean noise-free signal in the brain.
    """

    t1w_gre_prob: float = 0.5
    t1w_se_tr: Range = (0.3, 0.9)
    t1w_se_te: Range = (0.005, 0.02)
    t1w_gre_tr: Range = (0.006, 0.03)
    t1w_gre_te: Range = (0.002, 0.005)
    t1w_gre_fa: Range = (5.0, 40.0)
    t2w_tr: Range = (2.5, 8.0)
    t2w_te: Range = (0.06, 0.15)
    flair_tr: Range = (6.0, 12.0)
    flair_te: Range = (0.08, 0.15)
    flair_ti: Range = (1.8, 3.0)
    scale: Range = (0.5, 2.0)
    noise_rel: Range = (0.005, 0.05)

    def __post_init__(self) -> None:
        if not 0.0 <= self.t1w_gre_prob <= 1.0:
            raise ValueError(f"t1w_gre_prob must be in [0, 1]; got {self.t1w_gre_prob}")
        for name, value in self.__dict__.items():
            if name == "t1w_gre_prob":
                continue
            if len(value) != 2 or not 0 <= value[0] <= value[1]:
                raise ValueError(f"{name} must be a (low, high) pair with 0 <= low <= high; got {value!r}")
        if self.scale[0] <= 0:
            raise ValueError(f"scale must be positive; got {self.scale}")
        pairs = [("t1w_se_te", "t1w_se_tr"), ("t1w_gre_te", "t1w_gre_tr"), ("t2w_te", "t2w_tr"),
                 ("flair_te", "flair_tr"), ("flair_ti", "flair_tr")]
        for short, long in pairs:
            if getattr(self, short)[1] >= getattr(self, long)[0]:
                raise ValueError(
                    f"every {short} must be below every {long}; got {getattr(self, short)} and {getattr(self, long)}"
                )
        if not 0 < self.t1w_gre_fa[0] <= self.t1w_gre_fa[1] <= 180:
            raise ValueError(f"t1w_gre_fa must lie in (0, 180] degrees; got {self.t1w_gre_fa}")
