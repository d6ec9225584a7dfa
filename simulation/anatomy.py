"""Brain anatomy as fuzzy tissue-class fractions, one split of axial slices at a time.

Three sources share one container, :class:`Anatomy`:

``"mni152"`` (default, offline)
    GM and WM probability maps of the ICBM152 2009a nonlinear symmetric template shipped inside
    the nilearn wheel; CSF is the rest of the filled brain support. 1 mm, slab-wise splits
    (see :mod:`simulation.mni152` for the exact slice ranges).
``"brainweb"``
    The 20 BrainWeb normal anatomical models (fuzzy, 11 tissue classes), downloaded once with
    :func:`simulation.download_brainweb` and cached; subject-wise 16/1/3 split
    (see :mod:`simulation.brainweb`).
``"phantom"``
    A few soft ellipses (csf/gm/wm) built on the fly, for fast unit tests.

There is no background class: the background fraction is ``1 - fractions.sum(0)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Anatomy", "load_anatomy", "resolve_anatomy", "CLASS_NAMES", "SOURCES", "SPLITS"]

#: Every class name an :class:`Anatomy` may hold (BrainWeb's 11 non-background classes).
CLASS_NAMES: tuple[str, ...] = (
    "csf", "gm", "wm", "fat", "muscle", "muscle_skin", "skull", "vessels", "fat2", "dura", "marrow",
)
SOURCES: tuple[str, ...] = ("mni152", "brainweb", "phantom")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Tolerance for sum over classes <= 1 (float32 rounding of stored fractions).
_SUM_TOL = 1e-4


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Fuzzy tissue fractions of the axial slices of one split.

    Attributes
    ----------
    fractions : torch.Tensor
        ``(K, N, Y, X)`` float32 in [0, 1], the sum over K is <= 1 (the remainder is background).
        K classes, N axial slices, Y (anterior at row 0 -> posterior), X in-plane.
    class_names : tuple of str
        K lowercase names from :data:`CLASS_NAMES`, in the order of ``fractions``.
    voxel_size_mm : (float, float)
        In-plane voxel size (Y, X) in millimetres.
    source : str
        ``"mni152"``, ``"brainweb"`` or ``"phantom"``.
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    slice_ids : tuple of str
        Provenance of each of the N slices, e.g. ``"mni152:z=87"`` or
        ``"brainweb:subject04:z=120"`` (z in the source's voxel grid).
    """

    fractions: torch.Tensor
    class_names: tuple[str, ...]
    voxel_size_mm: tuple[float, float]
    source: str
    split: str
    slice_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        f = self.fractions
        if not isinstance(f, torch.Tensor) or f.ndim != 4:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"fractions must be a tensor of shape (K, N, Y, X); got {got}")
        if f.dtype != torch.float32:
            raise TypeError(f"fractions must be float32; got {f.dtype}")
        names = tuple(self.class_names)
        if len(names) != f.shape[0]:
            raise ValueError(
                f"class_names must have one name per class (K = {f.shape[0]}); got {len(names)}: {names}"
            )
        unknown = [n for n in names if n not in CLASS_NAMES]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"class_names must be distinct names from {CLASS_NAMES}; got {names}")
        if len(self.slice_ids) != f.shape[1]:
            raise ValueError(
                f"slice_ids must have one entry per slice (N = {f.shape[1]}); got {len(self.slice_ids)}"
            )
        if len(self.voxel_size_mm) != 2 or min(self.voxel_size_mm) <= 0:
            raise ValueError(f"voxel_size_mm must be two positive floats (Y, X); got {self.voxel_size_mm}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}; got {self.source!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {self.split!r}")
        if f.numel() and (f.min() < 0 or f.max() > 1 or f.sum(0).max() > 1 + _SUM_TOL):
            raise ValueError(
                "fractions must lie in [0, 1] with a sum over classes <= 1; got "
                f"min {float(f.min()):.4g}, max {float(f.max()):.4g}, max sum {float(f.sum(0).max()):.4g}"
            )
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "slice_ids", tuple(self.slice_ids))
        object.__setattr__(self, "voxel_size_mm", (float(self.voxel_size_mm[0]), float(self.voxel_size_mm[1])))

    @property
    def n_slices(self) -> int:
        """Number of axial slices N."""
        return int(self.fractions.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """In-plane image shape (Y, X)."""
        return int(self.fractions.shape[2]), int(self.fractions.shape[3])

    def background(self) -> torch.Tensor:
        """Background fraction ``1 - Σ_k fractions``, shape ``(N, Y, X)``."""
        return (1 - self.fractions.sum(0)).clamp_(0, 1)

    def class_index(self, name: str) -> int:
        """Index of class ``name`` in ``fractions``; ValueError naming the classes if absent."""
        try:
            return self.class_names.index(name)
        except ValueError:
            raise ValueError(f"class {name!r} not in this anatomy; classes are {self.class_names}") from None

    def __repr__(self) -> str:
        return (
            f"Anatomy(source={self.source!r}, split={self.split!r}, classes={self.class_names}, "
            f"slices={self.n_slices}, shape={self.shape}, voxel_size_mm={self.voxel_size_mm})"
        )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value


def load_anatomy(
    source: str = "mni152",
    split: str = "train",
    *,
    cache_dir: str | Path | None = None,
    download: bool = False,
    min_brain_fraction: float = 0.25,
    **kw: Any,
) -> Anatomy:
    """Load the fuzzy tissue fractions of one split.

    Parameters
    ----------
    source : {"mni152", "brainweb", "phantom"}
        Anatomy source; ``"mni152"`` works offline with no download.
    split : {"train", "val", "test"}
        Which disjoint part of the source.
    cache_dir : path, optional
        BrainWeb cache folder (default ``$PINQI_CACHE/brainweb`` or ``~/.cache/pinqi/brainweb``).
        Ignored by the other sources.
    download : bool
        BrainWeb only: fetch missing subjects instead of raising.
    min_brain_fraction : float in [0, 1]
        Keep an axial slice only if its brain tissue (sum of the csf, gm and wm fractions over
        the slice) is at least this fraction of that of the slice with the most brain tissue of
        the same volume. Not applied to ``"phantom"``.
    **kw
        Source-specific options: ``"phantom"``: ``shape``, ``n_slices``, ``seed``/``generator``;
        ``"brainweb"``: ``subjects`` (override the split's subject list), ``slice_step``, and
        the keyword arguments of :func:`simulation.download_brainweb` used when ``download``.

    Returns
    -------
    Anatomy
        A fresh copy: modifying its tensor does not affect later loads.
    """
    _check_choice("source", source, SOURCES)
    _check_choice("split", split, SPLITS)
    if not 0.0 <= float(min_brain_fraction) <= 1.0:
        raise ValueError(f"min_brain_fraction must be in [0, 1]; got {min_brain_fraction}")
    if source == "phantom":
        from .phantom import phantom_anatomy

        return phantom_anatomy(split=split, **kw)
    if source == "mni152":
        if kw:
            raise TypeError(f"load_anatomy('mni152') got unexpected keyword arguments {sorted(kw)}")
        from .mni152 import load_mni152

        return load_mni152(split, min_brain_fraction=min_brain_fraction)
    from .brainweb import load_brainweb

    return load_brainweb(
        split, cache_dir=cache_dir, download=download, min_brain_fraction=min_brain_fraction, **kw
    )


def resolve_anatomy(
    anatomy: Anatomy | None, source: str, split: str, anatomy_kwargs: dict | None = None
) -> Anatomy:
    """The anatomy a dataset should use: ``anatomy`` itself, or ``load_anatomy(source, split, ...)``.

    Raises
    ------
    TypeError
        ``anatomy`` is neither an :class:`Anatomy` nor None.
    ValueError
        The anatomy holds no slice.
    """
    if anatomy is None:
        anatomy = load_anatomy(source, split, **(anatomy_kwargs or {}))
    elif not isinstance(anatomy, Anatomy):
        raise TypeError(f"anatomy must be an Anatomy or None; got {type(anatomy).__name__}")
    if anatomy.n_slices < 1:
        raise ValueError(f"anatomy must hold at least one slice; got {anatomy!r}")
    return anatomy
