"""The container of brain anatomy, :class:`Anatomy`: fuzzy tissue-class fractions of axial slices.

The loaders that fill it (:mod:`simulation.mni152`, :mod:`simulation.brainweb`,
:mod:`simulation.phantom`) import it from here; :func:`simulation.anatomy.load_anatomy` picks one
of them. Keeping the container apart from the chooser keeps the imports one-way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Anatomy", "CLASS_NAMES", "SOURCES", "SPLITS"]

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

