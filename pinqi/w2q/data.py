"""Data of W2Q training: held-out protocol bands and contrast dropout (see :mod:`pinqi.w2q.training`).

:class:`BandedProtocolDataset` is a :class:`simulation.WeightedImageDataset` whose protocols are
drawn from :class:`~pinqi.w2q.protocols.ProtocolRanges` (those of the training configuration's
``data_version``, :func:`~pinqi.w2q.protocols.data_settings`) with a band of every continuous parameter held out: for training, each of TR,
TE, TI and FA is drawn from outside the band (by default the lower or upper 40 % of its range);
for validation and test from inside it (the middle 20 %).
"""

from __future__ import annotations

from typing import Any

import torch

from simulation import WeightedImageDataset, load_anatomy

from .config import W2QTrainConfig
from .protocols import data_settings

__all__ = ["BandedProtocolDataset", "build_dataset", "contrast_availability"]


class BandedProtocolDataset(WeightedImageDataset):
    """:class:`WeightedImageDataset` with a band of every protocol parameter held out (module docstring).

    Parameters
    ----------
    held_out
        ``(low, high)`` fractions of each parameter's range.
    part
        ``"train"`` (outside the band) or ``"held_out"`` (inside it).
    **kwargs
        Passed to :class:`WeightedImageDataset`.
    """

    def __init__(self, *args: Any, held_out: tuple[float, float] = (0.4, 0.6), part: str = "train", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if part not in ("train", "held_out"):
            raise ValueError(f"part must be 'train' or 'held_out'; got {part!r}")
        self.held_out, self.part = (float(held_out[0]), float(held_out[1])), part

    def _draw(self, g: torch.Generator, r: tuple[float, float]) -> float:
        """A value of range ``r`` outside (training) or inside (held out) the band."""
        u = float(torch.rand((), generator=g, dtype=torch.float64))
        lo, hi = self.held_out
        if self.part == "held_out":
            f = lo + (hi - lo) * u
        else:
            f = u * (lo + 1 - hi)
            f = f if f < lo else f + (hi - lo)
        return r[0] + (r[1] - r[0]) * f


def build_dataset(config: W2QTrainConfig, split: str, length: int, seed: int | None = None) -> BandedProtocolDataset:
    """Training (``split="train"``: protocols outside the band) or val/test data (inside it)."""
    kwargs: dict[str, Any] = {"shape": (config.image_size, config.image_size)} if config.anatomy == "phantom" else {}
    anatomy = load_anatomy(config.anatomy, split, **kwargs)
    return BandedProtocolDataset(anatomy, length=length, seed=config.seed if seed is None else seed,
                                 image_size=config.image_size, held_out=config.held_out,
                                 part="train" if split == "train" else "held_out", **data_settings(config.data_version))


def contrast_availability(batch: int, n_contrasts: int, p_drop: float, generator: torch.Generator) -> torch.Tensor:
    """``(batch, n_contrasts)`` bool: all True, or with probability ``p_drop`` a random non-empty proper subset."""
    subsets = [[bool(m >> c & 1) for c in range(n_contrasts)] for m in range(1, 2**n_contrasts - 1)]
    out = torch.ones(batch, n_contrasts, dtype=torch.bool)
    for b in range(batch):
        if float(torch.rand((), generator=generator)) < p_drop:
            out[b] = torch.tensor(subsets[int(torch.randint(len(subsets), (), generator=generator))])
    return out
