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

from pathlib import Path
from typing import Any

from .anatomy_base import CLASS_NAMES, SOURCES, SPLITS, Anatomy

__all__ = ["Anatomy", "load_anatomy", "resolve_anatomy", "CLASS_NAMES", "SOURCES", "SPLITS"]


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
