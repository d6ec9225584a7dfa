"""Synthetic weighted brain images (T1w, T2w, FLAIR) with ground-truth (PD, T1, T2) maps.

Every sample draws, from a private generator seeded with ``sample_seed(seed, i)`` (see
:mod:`simulation.t1_dataset`): a slice, tissue values, the geometric augmentation, smooth
fields, then one protocol per contrast from :class:`ProtocolRanges`, a global intensity scale
and a noise level per contrast, and the noise.

Contrasts (always in this order)
    0. T1-weighted: spin echo (``SpinEcho``) or spoiled gradient echo (``SpoiledGRE``), chosen per
       sample with probability ``t1w_gre_prob`` for the GRE;
    1. T2-weighted: turbo spin echo, modelled as ``SpinEcho`` with long TR and TE;
    2. FLAIR: inversion-recovery spin echo (``FLAIR``).

Sequence parameter ranges are deliberately wider than clinical practice so that a network sees
a continuum of protocols; restrict them (or hold parts out) by passing other ``ProtocolRanges``.

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
from .t1_dataset import sample_seed
from .tissues import map_weights, sample_tissue_values

__all__ = ["ProtocolRanges", "WeightedImageDataset", "SEQUENCE_TYPES", "CONTRASTS"]

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
    dtype
        ``torch.float32`` (default) or ``torch.float64``.

    Notes
    -----
    ``__getitem__`` returns a dict: ``images`` ``(3, Y, X)`` (T1w, T2w, FLAIR);
    ``sequence_params`` ``(3, 4)`` = (TR [s], TE [s], TI [s] (0 if none), flip angle [deg]
    (90 for the spin echoes)); ``sequence_types`` ``(3,)`` long, ids into
    :data:`SEQUENCE_TYPES`; ``params`` ``(3, Y, X)`` = (PD, T1 [s], T2 [s]); ``brain_mask``
    ``(Y, X)`` bool; ``scale`` ``(3,)`` and ``sigma`` ``(3,)`` (noise std of the real and of the
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

    def __len__(self) -> int:
        return self.length

    def draw_protocol(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One protocol: ``(3, 4)`` float64 (TR, TE, TI, FA) and ``(3,)`` long sequence ids."""
        pr = self.protocols
        gre = float(torch.rand((), generator=g, dtype=torch.float64)) < pr.t1w_gre_prob
        if gre:
            t1w = [_u(g, pr.t1w_gre_tr), _u(g, pr.t1w_gre_te), 0.0, _u(g, pr.t1w_gre_fa)]
        else:
            t1w = [_u(g, pr.t1w_se_tr), _u(g, pr.t1w_se_te), 0.0, 90.0]
        t2w = [_u(g, pr.t2w_tr), _u(g, pr.t2w_te), 0.0, 90.0]
        flair = [_u(g, pr.flair_tr), _u(g, pr.flair_te), _u(g, pr.flair_ti), 90.0]
        seq = torch.tensor([t1w, t2w, flair], dtype=torch.float64)
        types = torch.tensor([SEQUENCE_TYPES.index("spoiled_gre" if gre else "spin_echo"),
                              SEQUENCE_TYPES.index("spin_echo"), SEQUENCE_TYPES.index("flair")])
        return seq, types

    @staticmethod
    def signal(params: torch.Tensor, seq: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Noise-free weighted signals ``(B, 3, Y, X)`` of ``params`` ``(B, 3, Y, X)`` (PD, T1, T2)
        for one protocol (``seq`` ``(3, 4)``, ``types`` ``(3,)``) by the signal models.

        FLAIR is the signed signal (``magnitude=False``): the magnitude is taken after the
        complex noise is added, which makes the noise Rician."""
        from .signal_models import FLAIR, SpinEcho, SpoiledGRE

        out = []
        for (tr, te, ti, fa), kind in zip(seq.tolist(), types.tolist()):
            name = SEQUENCE_TYPES[kind]
            if name == "spin_echo":
                model = SpinEcho(tr=tr, te=te)
            elif name == "spoiled_gre":
                model = SpoiledGRE(tr=tr, te=te, flip_angle_deg=fa)
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
        values = sample_tissue_values(a.class_names, g)
        w, b, _ = map_weights(values, a.class_names, with_t2=True)  # pd, t1, t2, brain, tissue
        theta = random_affine(a.shape, a.voxel_size_mm, self.image_size, self.augmentation, g, self.fov_mm)
        frac = self.anatomy.fractions[:, n].contiguous()
        pd, t1, t2, brain, _tissue = warp_linear_maps(frac, w, b, theta, self.image_size)
        cfg = self.augmentation
        fields = random_smooth_fields(
            self.image_size,
            (cfg.t1_degree, cfg.t1_degree, cfg.bias_degree, cfg.bias_degree, cfg.bias_degree),
            (cfg.t1_max_rel, cfg.t1_max_rel, cfg.bias_max_log, cfg.bias_max_log, cfg.bias_max_log),
            g,
        )
        params = torch.stack([pd.clamp_min(0), t1 * (1 + fields[0]), t2 * (1 + fields[1])]).to(self.dtype)
        seq, types = self.draw_protocol(g)
        pr = self.protocols
        lo, hi = math.log(pr.scale[0]), math.log(pr.scale[1])
        u = torch.rand(2, 3, generator=g, dtype=torch.float64)
        scale = torch.exp(lo + (hi - lo) * u[0]).to(self.dtype)
        sigma_rel = (pr.noise_rel[0] + (pr.noise_rel[1] - pr.noise_rel[0]) * u[1]).to(self.dtype)
        clean = self.signal(params[None], seq, types)[0]  # (3, Y, X)
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
            "scale": scale,
            "sigma": sigma,
            "bias": bias,
            "slice_index": torch.tensor(n, dtype=torch.long),
        }

    def __repr__(self) -> str:
        return (
            f"WeightedImageDataset(source={self.anatomy.source!r}, split={self.anatomy.split!r}, "
            f"length={self.length}, seed={self.seed}, image_size={self.image_size})"
        )
