"""Synthetic weighted brain images (T1w, T2w, FLAIR) with ground-truth (PD, T1, T2) maps.

Every sample draws, from a private generator seeded with ``sample_seed(seed, i)`` (see
:mod:`simulation.t1_dataset`): a slice, tissue values, the geometric augmentation, smooth
fields, then one protocol per contrast from :class:`ProtocolRanges`, a global intensity scale
and a noise level per contrast, and the noise.

Contrasts (always in this order)
    0. T1-weighted: spin echo (``SpinEcho``), spoiled gradient echo (``SpoiledGRE``) or MP-RAGE
       (:class:`~simulation.mprage.MPRAGE`), chosen per sample with probabilities
       ``t1w_gre_prob`` and ``t1w_mprage_prob``;
    1. T2-weighted: turbo spin echo, modelled as ``SpinEcho`` with long TR and TE;
    2. FLAIR: inversion-recovery spin echo (``FLAIR``).

Sequence parameter ranges cover clinical practice (see :mod:`simulation.protocol_ranges`);
restrict them (or hold parts out) by passing other ``ProtocolRanges``.

Partial volumes (``partial_volume``)
    ``"signal"`` (default, physical): a voxel's signal is the fraction-weighted sum of its tissues'
    signals, ``q = Σ_k f_k q(PD_k, T1_k, T2_k)``, as in a real voxel; ``"maps"``: the signal of
    the fraction-weighted maps, ``q(Σ_k f_k PD_k, Σ_k f_k T1_k, Σ_k f_k T2_k)`` (the convention
    of the W2Q weights trained before 2026-11). The targets are the fraction-weighted maps either
    way by default; for partial-volume pixels they are a convention, so score T1/T2 on pure tissue
    (``fractions`` > 0.95).

Relaxation targets (``relaxation_targets``)
    ``"fractions"`` (default): ``T1 = Σ_k f_k T1_k`` (and T2 alike). With physical partial volumes
    this label is far from what the signal encodes where a long-T2 tissue is mixed in: 3 % CSF
    (T2 1.8 s) raises a grey-matter label of 90 ms to 140 ms, while a fit of the voxel's signals
    returns about 90 ms. ``"water_rates"``: the relaxation *rates* averaged over the voxel's water,
    ``R = Σ_k w_k R_k`` with ``w_k = f_k PD_k / Σ_j f_j PD_j`` (the fast-exchange limit), so
    ``T1 = 1 / Σ_k w_k / T1_k``; the same smooth T1/T2 factors apply. Pixels with almost no water
    (``Σ f PD < 1e-3``) keep the fraction-weighted value. PD is ``Σ_k f_k PD_k`` either way.

Image formation, per contrast ``c``
    ``image_c = | s_c · b_c · q_c(PD, T1, T2) + σ_c s_c (n₁ + i n₂) |`` with ``q_c`` the signal
    model, ``b_c = exp(p_c)`` a smooth random bias field (its own per contrast: the contrasts may
    come from different sessions), ``s_c`` log-uniform in ``scale`` (the unknown receiver gain)
    and ``σ_c = r_c · m_c`` with ``r_c`` uniform in ``noise_rel`` and ``m_c`` the mean noise-free
    signal ``|q_c|`` in the brain (so the SNR in the brain is ``1 / r_c``, 20–200 by default,
    whatever the contrast's signal level). The magnitude of a complex Gaussian-noisy signal is
    Rician distributed.

Targets
    ``params`` = (PD, T1 [s], T2 [s]) without bias, scale or noise. T1 and T2 each get their own
    smooth polynomial factor (``AugmentationConfig.t1_degree`` / ``t1_max_rel``). Background:
    PD = 0, T1 = ``BACKGROUND_T1``, T2 = ``BACKGROUND_T2`` (see :mod:`simulation.tissues`).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from .anatomy import Anatomy, resolve_anatomy
from .augmentation import AugmentationConfig, output_size, random_affine, random_smooth_fields, warp_linear_maps
from .protocol_ranges import CONTRASTS, SEQUENCE_TYPES, ProtocolRanges, Range
from .mprage import MPRAGE
from .t1_dataset import sample_seed
from .tissues import BRAIN_CLASSES, TissueRange, map_weights, sample_tissue_values

__all__ = ["ProtocolRanges", "WeightedImageDataset", "SEQUENCE_TYPES", "CONTRASTS", "water_weighted_relaxation"]

def water_weighted_relaxation(
    values: torch.Tensor, fractions: torch.Tensor, t1_fallback: torch.Tensor, t2_fallback: torch.Tensor,
    min_water: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T1 and T2 [s] of mixed voxels as water-weighted averages of the relaxation rates.

    Parameters
    ----------
    values
        ``(K, 3)`` per class (T1 [s], T2 [s], PD).
    fractions
        ``(K, Y, X)`` class fractions.
    t1_fallback, t2_fallback
        ``(Y, X)`` values kept where the voxel holds less than ``min_water`` water (``Σ f PD``).

    Returns
    -------
    ``(T1, T2)``, each ``(Y, X)``: ``1 / Σ_k w_k / T_k`` with ``w_k = f_k PD_k / Σ_j f_j PD_j``.
    """
    t1, t2, pd = values.to(fractions.dtype).unbind(-1)
    water = fractions * pd[:, None, None]
    total = water.sum(0)
    enough = total >= min_water
    safe = torch.where(enough, total, torch.ones_like(total))
    r1 = (water / t1[:, None, None]).sum(0) / safe
    r2 = (water / t2[:, None, None]).sum(0) / safe
    return (torch.where(enough, 1 / r1.clamp_min(1e-12), t1_fallback.to(total.dtype)),
            torch.where(enough, 1 / r2.clamp_min(1e-12), t2_fallback.to(total.dtype)))


def _u(g: torch.Generator, r: Range) -> float:
    return r[0] + (r[1] - r[0]) * float(torch.rand((), generator=g, dtype=torch.float64))


class WeightedImageDataset(Dataset):
    """On-the-fly T1w / T2w / FLAIR magnitude images with (PD, T1, T2) targets.

    Parameters
    ----------
    anatomy, source, split, length, seed, image_size, augmentation, fov_mm, anatomy_kwargs
        As in :class:`~simulation.t1_dataset.T1MappingDataset` (the phase settings of the
        augmentation are unused: the images are magnitudes).
    protocols
        :class:`ProtocolRanges`, the ranges the sequence parameters are drawn from.
    partial_volume
        ``"signal"`` (physical, default) or ``"maps"`` (module docstring).
    relaxation_targets
        ``"fractions"`` (default) or ``"water_rates"`` (module docstring): how the T1/T2 targets of
        partial-volume pixels are defined.
    tissue_ranges
        Per-class value ranges (default :data:`~simulation.tissues.TISSUE_RANGES`; W2Q trains on
        :data:`~simulation.tissues.W2Q_TISSUE_PRIOR`).
    dtype
        ``torch.float32`` (default) or ``torch.float64``.

    Notes
    -----
    ``__getitem__`` returns a dict: ``images`` ``(3, Y, X)`` (T1w, T2w, FLAIR);
    ``sequence_params`` ``(3, 6)`` = :data:`~simulation.protocol_ranges.PROTOCOL_FIELDS` (TR [s],
    TE [s], TI [s] (0 if none), flip angle [deg] (90 for the spin echoes), τ [s] and N (MP-RAGE,
    else 0)); ``sequence_types`` ``(3,)`` long, ids into
    :data:`SEQUENCE_TYPES`; ``params`` ``(3, Y, X)`` = (PD, T1 [s], T2 [s]); ``brain_mask``
    ``(Y, X)`` bool; ``fractions`` ``(3, Y, X)`` of (gm, wm, csf) (zeros for an absent class);
    ``scale`` ``(3,)`` and ``sigma`` ``(3,)`` (noise std of the real and of the
    imaginary part, in image units) per contrast; ``bias`` ``(3, Y, X)`` the smooth bias field
    ``b_c`` of every contrast (so the noise-free image is ``scale · bias · |q(params)|``);
    ``slice_index`` ``()`` long.
    """

    def __init__(
        self,
        anatomy: Anatomy | None = None,
        *,
        source: str = "mni152",
        split: str = "train",
        length: int = 1000,
        seed: int = 0,
        image_size: int | tuple[int, int] = 192,
        protocols: ProtocolRanges | None = None,
        partial_volume: str = "signal",
        relaxation_targets: str = "fractions",
        tissue_ranges: dict[str, TissueRange] | None = None,
        augmentation: AugmentationConfig | None = None,
        fov_mm: float | None = None,
        dtype: torch.dtype = torch.float32,
        anatomy_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        anatomy = resolve_anatomy(anatomy, source, split, anatomy_kwargs)
        if int(length) < 0:
            raise ValueError(f"length must be >= 0; got {length}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
        self.anatomy = anatomy
        self.length = int(length)
        self.seed = int(seed)
        self.image_size = output_size(image_size)
        self.protocols = ProtocolRanges() if protocols is None else protocols
        self.augmentation = AugmentationConfig() if augmentation is None else augmentation
        self.fov_mm = fov_mm
        self.dtype = dtype
        if partial_volume not in ("signal", "maps"):
            raise ValueError(f"partial_volume must be 'signal' or 'maps'; got {partial_volume!r}")
        self.partial_volume = partial_volume
        if relaxation_targets not in ("fractions", "water_rates"):
            raise ValueError(f"relaxation_targets must be 'fractions' or 'water_rates'; got {relaxation_targets!r}")
        self.relaxation_targets = relaxation_targets
        self.tissue_ranges = tissue_ranges

    def __len__(self) -> int:
        return self.length

    def _draw(self, g: torch.Generator, r: Range) -> float:
        """One value of a sequence parameter from its range ``r`` (uniform; subclasses hold out bands)."""
        return _u(g, r)

    def draw_protocol(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One protocol: ``(3, 6)`` float64 (:data:`PROTOCOL_FIELDS`) and ``(3,)`` long sequence ids."""
        pr, d = self.protocols, self._draw
        u = float(torch.rand((), generator=g, dtype=torch.float64))
        if u < pr.t1w_gre_prob:
            kind, t1w = "spoiled_gre", [d(g, pr.t1w_gre_tr), d(g, pr.t1w_gre_te), 0.0, d(g, pr.t1w_gre_fa), 0.0, 0.0]
        elif u < pr.t1w_gre_prob + pr.t1w_mprage_prob:
            kind = "mprage"
            tr, te, ti, fa = d(g, pr.mprage_tr), d(g, pr.mprage_te), d(g, pr.mprage_ti), d(g, pr.mprage_fa)
            n = round(d(g, pr.mprage_n))
            tau = min(d(g, pr.mprage_tau), pr.mprage_tau_cap(tr, ti, n))
            t1w = [tr, min(te, 0.8 * tau), ti, fa, tau, float(n)]
        else:
            kind, t1w = "spin_echo", [d(g, pr.t1w_se_tr), d(g, pr.t1w_se_te), 0.0, 90.0, 0.0, 0.0]
        t2w = [d(g, pr.t2w_tr), d(g, pr.t2w_te), 0.0, 90.0, 0.0, 0.0]
        flair = [d(g, pr.flair_tr), d(g, pr.flair_te), d(g, pr.flair_ti), 90.0, 0.0, 0.0]
        seq = torch.tensor([t1w, t2w, flair], dtype=torch.float64)
        types = torch.tensor([SEQUENCE_TYPES.index(kind), SEQUENCE_TYPES.index("spin_echo"),
                              SEQUENCE_TYPES.index("flair")])
        return seq, types

    @staticmethod
    def signal(params: torch.Tensor, seq: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Noise-free weighted signals ``(B, 3, Y, X)`` of ``params`` ``(B, 3, Y, X)`` (PD, T1, T2)
        for one protocol (``seq`` ``(3, 6)`` or ``(3, 4)`` without MP-RAGE, ``types`` ``(3,)``).

        FLAIR and MP-RAGE are signed (``magnitude=False``): the magnitude is taken after the
        complex noise is added, which makes the noise Rician."""
        from .signal_models import FLAIR, SpinEcho, SpoiledGRE

        out = []
        for row, kind in zip(seq.tolist(), types.tolist()):
            tr, te, ti, fa = row[:4]
            name = SEQUENCE_TYPES[kind]
            if name == "spin_echo":
                model = SpinEcho(tr=tr, te=te)
            elif name == "spoiled_gre":
                model = SpoiledGRE(tr=tr, te=te, flip_angle_deg=fa)
            elif name == "mprage":
                model = MPRAGE(tr, te, ti, fa, row[4], row[5], magnitude=False)
            else:
                model = FLAIR(tr=tr, te=te, ti=ti, magnitude=False)
            out.append(model(params))
        return torch.cat(out, dim=1)

    @staticmethod
    def signal_level(clean: torch.Tensor, brain_mask: torch.Tensor) -> torch.Tensor:
        """Mean absolute noise-free signal ``(3,)`` in the brain (whole image if the mask is empty)."""
        a = clean.abs()
        if bool(brain_mask.any()):
            return a[:, brain_mask].mean(-1)
        return a.flatten(1).mean(-1)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.length <= int(index) < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        index = int(index) % self.length
        a = self.anatomy
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        n = int(torch.randint(a.n_slices, (), generator=g))
        values = sample_tissue_values(a.class_names, g, self.tissue_ranges)
        w, b, _ = map_weights(values, a.class_names, with_t2=True)  # pd, t1, t2, brain, tissue
        theta = random_affine(a.shape, a.voxel_size_mm, self.image_size, self.augmentation, g, self.fov_mm)
        frac = self.anatomy.fractions[:, n].contiguous()
        pd, t1, t2, brain, _tissue = warp_linear_maps(frac, w, b, theta, self.image_size)
        k = len(a.class_names)
        warped = warp_linear_maps(frac, torch.eye(k), torch.zeros(k), theta, self.image_size).clamp(0, 1)
        cfg = self.augmentation
        fields = random_smooth_fields(
            self.image_size,
            (cfg.t1_degree, cfg.t1_degree, cfg.bias_degree, cfg.bias_degree, cfg.bias_degree),
            (cfg.t1_max_rel, cfg.t1_max_rel, cfg.bias_max_log, cfg.bias_max_log, cfg.bias_max_log),
            g,
        )
        if self.relaxation_targets == "water_rates":
            t1, t2 = water_weighted_relaxation(values, warped, t1, t2)
        params = torch.stack([pd.clamp_min(0), t1 * (1 + fields[0]), t2 * (1 + fields[1])]).to(self.dtype)
        seq, types = self.draw_protocol(g)
        pr = self.protocols
        lo, hi = math.log(pr.scale[0]), math.log(pr.scale[1])
        u = torch.rand(2, 3, generator=g, dtype=torch.float64)
        scale = torch.exp(lo + (hi - lo) * u[0]).to(self.dtype)
        sigma_rel = (pr.noise_rel[0] + (pr.noise_rel[1] - pr.noise_rel[0]) * u[1]).to(self.dtype)
        if self.partial_volume == "maps":
            clean = self.signal(params[None], seq, types)[0]  # (3, Y, X)
        else:
            clean = self.tissue_signal_sum(values, warped, fields[:2], seq, types)
        brain_mask = brain >= 0.5
        level = self.signal_level(clean, brain_mask)
        bias = fields[2:].exp().to(self.dtype)
        signal = clean * bias * scale[:, None, None]
        sigma = sigma_rel * level * scale
        noise = torch.randn(2, 3, *self.image_size, generator=g, dtype=self.dtype) * sigma[:, None, None]
        images = torch.hypot(signal + noise[0], noise[1])
        return {
            "images": images,
            "sequence_params": seq.to(self.dtype),
            "sequence_types": types,
            "params": params,
            "brain_mask": brain_mask,
            "fractions": torch.stack([warped[a.class_names.index(c)] if c in a.class_names else torch.zeros_like(brain)
                                      for c in BRAIN_CLASSES]).to(self.dtype),
            "scale": scale,
            "sigma": sigma,
            "bias": bias,
            "slice_index": torch.tensor(n, dtype=torch.long),
        }

    def tissue_signal_sum(self, values: torch.Tensor, fractions: torch.Tensor, rel_fields: torch.Tensor,
                          seq: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Physical partial volumes: ``Σ_k f_k q(PD_k, T1_k (1 + δ1), T2_k (1 + δ2))`` ``(3, Y, X)``.

        ``values`` ``(K, 3)`` (T1 [s], T2 [s], PD) per class, ``fractions`` ``(K, Y, X)``,
        ``rel_fields`` ``(2, Y, X)`` the smooth relative T1/T2 factors δ1, δ2."""
        t1, t2, pd = values.to(self.dtype).unbind(-1)
        one = torch.ones_like(rel_fields[0], dtype=self.dtype)
        per_class = torch.stack([pd[:, None, None] * one, t1[:, None, None] * (1 + rel_fields[0]).to(self.dtype),
                                 t2[:, None, None] * (1 + rel_fields[1]).to(self.dtype)], 1)  # (K, 3, Y, X)
        return (self.signal(per_class, seq, types) * fractions[:, None].to(self.dtype)).sum(0)

    def __repr__(self) -> str:
        return (
            f"WeightedImageDataset(source={self.anatomy.source!r}, split={self.anatomy.split!r}, "
            f"length={self.length}, seed={self.seed}, image_size={self.image_size})"
        )
