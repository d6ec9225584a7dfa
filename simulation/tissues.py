"""Random tissue values at 3 T and the parameter maps they make with tissue fractions.

Every sample draws one value per tissue class and parameter, uniformly from the class range in
:data:`TISSUE_RANGES` (T1 and T2 in seconds, PD relative to water). The maps are linear in the
fractions ``f_k`` (``K`` classes, background fraction ``f_0 = 1 - Σ_k f_k``):

* ``PD = Σ_k f_k PD_k`` — the background has no signal;
* ``T1 = Σ_k f_k T1_k + f_0 · BACKGROUND_T1`` and likewise ``T2`` — the fraction-weighted sum of
  the class values, the background treated as a class of its own with fixed values
  (:data:`BACKGROUND_T1`, :data:`BACKGROUND_T2`). Inside the head ``f_0 = 0`` and this is plain
  ``Σ_k f_k T1_k``; in air the maps are well defined (``R1 = 1 / BACKGROUND_T1``) although the
  signal there is zero.

Because the maps are linear in the fractions, resampling (bilinear interpolation, which is also
linear) commutes with map making: :func:`map_weights` builds the class-to-map weights once per
sample and one small matrix product turns a slice of fractions into all maps.

W2Q's prior
    :data:`TISSUE_RANGES` (which PINQI's :class:`~simulation.T1MappingDataset` draws from) is wide
    and its centres sit above most 3 T measurements (WM T1 1.15 s, GM 1.6 s). W2Q trains on
    :data:`W2Q_TISSUE_PRIOR` instead: ranges centred on 3 T literature values with realistic
    spreads (uniform, about ±20 % for T1, ±15 % for T2, ±10 % for PD). Sources (3 T, adult brain):

    * Wansapura et al., J Magn Reson Imaging 9:531 (1999): T1 WM ≈ 0.83 s, GM ≈ 1.33 s;
      T2 WM ≈ 80 ms, GM ≈ 110 ms;
    * Stanisz et al., Magn Reson Med 54:507 (2005): T1 WM ≈ 1.08 s, GM ≈ 1.82 s;
      T2 WM ≈ 69 ms, GM ≈ 99 ms;
    * Lu et al., J Magn Reson Imaging 22:13 (2005) (clinical brain sequences at 3 T): T1 of the
      order of 0.8–0.9 s in WM and 1.2–1.4 s in GM, CSF T1 ≈ 4 s (approximate);
    * CSF T2 ≈ 1.5–2 s and PD (water fraction) WM ≈ 0.69, GM ≈ 0.80, CSF ≈ 1 (approximate
      literature ranges, e.g. the multi-echo water-content literature).

    Centres: WM T1 0.90 s, T2 70 ms, PD 0.70; GM T1 1.40 s, T2 95 ms, PD 0.80; CSF T1 4.0 s,
    T2 1.8 s, PD 0.97. Other classes keep :data:`TISSUE_RANGES`.

Skull
    The source table gives no values for bone. Cortical bone has almost no visible signal in
    conventional imaging (ultra-short T2*), so ``skull`` gets PD 0–0.05, T1 0.2–0.4 s and
    T2 1–5 ms: dark in every contrast, as in a real scan.

Brain mask
    :func:`brain_mask`: pixels whose grey matter + white matter + CSF fraction is at least 0.5.
    Ventricles are CSF, so the mask has no holes; extra-cerebral CSF inside the skull is included.
    An anatomy without any of these classes falls back to "any tissue fraction >= 0.5".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "TissueRange",
    "TISSUE_RANGES",
    "W2Q_TISSUE_PRIOR",
    "BRAIN_CLASSES",
    "BACKGROUND_T1",
    "BACKGROUND_T2",
    "PARAMETERS",
    "sample_tissue_values",
    "map_weights",
    "tissue_maps",
    "brain_mask",
]

#: Order of the parameters in :func:`sample_tissue_values`.
PARAMETERS: tuple[str, str, str] = ("t1", "t2", "pd")

#: T1 [s] of the background pseudo-class (air); its R1 is 1 / BACKGROUND_T1 = 1 /s.
BACKGROUND_T1: float = 1.0
#: T2 [s] of the background pseudo-class (air).
BACKGROUND_T2: float = 0.1

#: Classes whose summed fraction defines the brain mask.
BRAIN_CLASSES: tuple[str, ...] = ("gm", "wm", "csf")


@dataclass(frozen=True)
class TissueRange:
    """Uniform ranges of one tissue class at 3 T.

    Attributes
    ----------
    t1, t2 : (float, float)
        Lower and upper bound in seconds.
    pd : (float, float)
        Lower and upper bound of the proton density relative to water.
    """

    t1: tuple[float, float]
    t2: tuple[float, float]
    pd: tuple[float, float]

    def __post_init__(self) -> None:
        for name in PARAMETERS:
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} range must satisfy 0 <= low <= high; got ({lo}, {hi})")


#: Per-class uniform ranges (T1 s, T2 s, PD) at 3 T. ``skull`` is our choice (see module docs).
TISSUE_RANGES: dict[str, TissueRange] = {
    "gm": TissueRange(t1=(1.2, 2.0), t2=(0.08, 0.12), pd=(0.7, 1.0)),
    "wm": TissueRange(t1=(0.8, 1.5), t2=(0.06, 0.10), pd=(0.5, 0.9)),
    "csf": TissueRange(t1=(2.0, 4.0), t2=(1.3, 2.0), pd=(0.9, 1.0)),
    "marrow": TissueRange(t1=(0.4, 0.6), t2=(0.06, 0.10), pd=(0.7, 1.0)),
    "dura": TissueRange(t1=(2.0, 2.8), t2=(0.2, 0.5), pd=(0.9, 1.0)),
    "fat": TissueRange(t1=(0.3, 0.5), t2=(0.06, 0.10), pd=(0.9, 1.0)),
    "fat2": TissueRange(t1=(0.4, 0.6), t2=(0.06, 0.10), pd=(0.6, 0.9)),
    "muscle": TissueRange(t1=(1.2, 1.5), t2=(0.04, 0.06), pd=(0.9, 1.0)),
    "muscle_skin": TissueRange(t1=(0.5, 0.9), t2=(0.3, 0.5), pd=(0.9, 1.0)),
    "vessels": TissueRange(t1=(1.7, 2.1), t2=(0.2, 0.4), pd=(0.8, 1.0)),
    "skull": TissueRange(t1=(0.2, 0.4), t2=(0.001, 0.005), pd=(0.0, 0.05)),
}


#: W2Q's prior (module docstring): 3 T literature centres with realistic spreads; other classes as TISSUE_RANGES.
W2Q_TISSUE_PRIOR: dict[str, TissueRange] = {
    **TISSUE_RANGES,
    "wm": TissueRange(t1=(0.72, 1.08), t2=(0.060, 0.080), pd=(0.63, 0.77)),
    "gm": TissueRange(t1=(1.12, 1.68), t2=(0.081, 0.109), pd=(0.72, 0.88)),
    "csf": TissueRange(t1=(3.4, 4.6), t2=(1.5, 2.1), pd=(0.94, 1.0)),
}


def _ranges_tensor(class_names: tuple[str, ...] | list[str], ranges: dict[str, TissueRange]) -> torch.Tensor:
    unknown = [n for n in class_names if n not in ranges]
    if unknown:
        raise ValueError(f"no tissue ranges for classes {unknown}; known classes are {sorted(ranges)}")
    return torch.tensor(
        [[getattr(ranges[n], p) for p in PARAMETERS] for n in class_names], dtype=torch.float64
    )  # (K, 3, 2)


def sample_tissue_values(
    class_names: tuple[str, ...] | list[str],
    generator: torch.Generator | None = None,
    ranges: dict[str, TissueRange] | None = None,
) -> torch.Tensor:
    """Draw one (T1, T2, PD) per class, uniformly within the class ranges.

    Parameters
    ----------
    class_names
        K class names (keys of ``ranges``).
    generator
        Source of randomness (a fresh unseeded draw from the default generator is never used by
        the datasets; they always pass one).
    ranges
        Class ranges, default :data:`TISSUE_RANGES`.

    Returns
    -------
    Tensor ``(K, 3)`` float32: columns T1 [s], T2 [s], PD.
    """
    r = _ranges_tensor(tuple(class_names), TISSUE_RANGES if ranges is None else ranges)
    u = torch.rand(r.shape[:2], generator=generator, dtype=torch.float64)
    return (r[..., 0] + u * (r[..., 1] - r[..., 0])).to(torch.float32)


def map_weights(
    values: torch.Tensor,
    class_names: tuple[str, ...] | list[str],
    *,
    with_t2: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Weights and offsets that turn fractions into maps: ``maps = W @ f + b``.

    Parameters
    ----------
    values
        ``(K, 3)`` class values (T1, T2, PD) from :func:`sample_tissue_values`.
    class_names
        The K class names (for the brain and object channels).
    with_t2
        Include the T2 map.

    Returns
    -------
    weights : Tensor ``(M, K)`` float32
    offsets : Tensor ``(M,)`` float32
    names : tuple of str
        The M map names, in order: ``"pd", "t1", ["t2",] "brain", "tissue"``. ``brain`` is the
        summed brain-class fraction, ``tissue`` the summed fraction of all classes.
    """
    names = tuple(class_names)
    if values.ndim != 2 or values.shape != (len(names), 3):
        raise ValueError(f"values must have shape (K, 3) with K = {len(names)}; got {tuple(values.shape)}")
    values = values.to(torch.float32)
    t1, t2, pd = values.unbind(-1)
    ones = torch.ones(len(names))
    brain_w = torch.tensor([1.0 if n in BRAIN_CLASSES else 0.0 for n in names])
    if not bool(brain_w.any()):
        brain_w = ones
    rows = [pd, t1 - BACKGROUND_T1]
    offs = [0.0, BACKGROUND_T1]
    out_names = ["pd", "t1"]
    if with_t2:
        rows.append(t2 - BACKGROUND_T2)
        offs.append(BACKGROUND_T2)
        out_names.append("t2")
    rows += [brain_w, ones]
    offs += [0.0, 0.0]
    out_names += ["brain", "tissue"]
    return torch.stack(rows), torch.tensor(offs, dtype=torch.float32), tuple(out_names)


def tissue_maps(
    fractions: torch.Tensor,
    class_names: tuple[str, ...] | list[str],
    values: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Parameter maps from fractions and class values.

    Parameters
    ----------
    fractions
        ``(K, *spatial)`` fractions in [0, 1] with sum over K <= 1.
    class_names
        The K class names.
    values
        ``(K, 3)`` class values (T1 [s], T2 [s], PD).

    Returns
    -------
    dict with ``"pd"``, ``"t1"`` [s], ``"t2"`` [s], ``"brain"`` (summed brain fraction) and
    ``"tissue"`` (summed fraction), each of shape ``spatial``.
    """
    if fractions.ndim < 1 or fractions.shape[0] != len(tuple(class_names)):
        raise ValueError(
            f"fractions must have shape (K, ...) with K = {len(tuple(class_names))}; got {tuple(fractions.shape)}"
        )
    w, b, names = map_weights(values, class_names)
    flat = fractions.reshape(fractions.shape[0], -1).to(torch.float32)
    maps = torch.addmm(b[:, None], w, flat).reshape(len(names), *fractions.shape[1:])
    return dict(zip(names, maps.unbind(0)))


def brain_mask(brain_fraction: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Boolean brain mask: summed brain-class fraction >= ``threshold`` (see module docs)."""
    return brain_fraction >= threshold
