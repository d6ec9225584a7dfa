"""A tiny procedural brain phantom (csf / gm / wm soft ellipses) for fast unit tests.

Each slice is a set of nested soft ellipses: an outer CSF rim, a grey-matter band, a
white-matter core and two CSF "ventricles" inside the white matter. Edges are logistic ramps
about one pixel wide, so every class has partial-volume pixels. Sizes, centre and rotation are
jittered per slice from a ``torch.Generator``; the same seed and split always give the same
phantom, and the three splits use different streams.
"""

from __future__ import annotations

import math

import torch

from .anatomy_base import SPLITS, Anatomy

__all__ = ["phantom_anatomy"]

_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def _soft_ellipse(
    yy: torch.Tensor, xx: torch.Tensor, cy: float, cx: float, ry: float, rx: float, angle: float, edge: float
) -> torch.Tensor:
    """Soft indicator of an ellipse (1 inside, 0 outside, logistic edge of ``edge`` pixels)."""
    c, s = math.cos(angle), math.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    r = torch.sqrt(u * u + v * v)
    # signed distance to the boundary, approximately in pixels
    dist = (1 - r) * min(rx, ry)
    return torch.sigmoid(dist / edge)


def phantom_anatomy(
    shape: tuple[int, int] = (32, 32),
    n_slices: int = 4,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    split: str = "train",
    edge_px: float = 0.6,
) -> Anatomy:
    """Build a procedural csf/gm/wm phantom.

    Parameters
    ----------
    shape : (Y, X)
        In-plane size in pixels, each >= 8.
    n_slices : int
        Number of slices N >= 1.
    generator : torch.Generator, optional
        Source of the per-slice jitter. If given, ``seed`` must be None and the split does not
        change the stream (the caller owns it).
    seed : int, optional
        Seed of a private CPU generator (default 0), offset per split so splits differ.
    split : {"train", "val", "test"}
        Recorded in the result and used to offset ``seed``.
    edge_px : float
        Width of the logistic edges in pixels.

    Returns
    -------
    Anatomy
        ``fractions`` of shape ``(3, N, Y, X)`` with classes ``("csf", "gm", "wm")``, 1 mm voxels.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if len(shape) != 2 or min(int(shape[0]), int(shape[1])) < 8:
        raise ValueError(f"shape must be (Y, X) with both >= 8; got {shape}")
    if int(n_slices) < 1:
        raise ValueError(f"n_slices must be >= 1; got {n_slices}")
    if edge_px <= 0:
        raise ValueError(f"edge_px must be > 0; got {edge_px}")
    if generator is not None and seed is not None:
        raise ValueError("give either generator or seed, not both")
    if generator is None:
        generator = torch.Generator().manual_seed((0 if seed is None else int(seed)) + _SPLIT_OFFSET[split])
    ny, nx = int(shape[0]), int(shape[1])
    yy, xx = torch.meshgrid(
        torch.arange(ny, dtype=torch.float64), torch.arange(nx, dtype=torch.float64), indexing="ij"
    )
    out = torch.empty(3, int(n_slices), ny, nx, dtype=torch.float64)
    for i in range(int(n_slices)):
        j = torch.rand(8, generator=generator, dtype=torch.float64).tolist()
        cy = (ny - 1) / 2 + (j[0] - 0.5) * 0.06 * ny
        cx = (nx - 1) / 2 + (j[1] - 0.5) * 0.06 * nx
        ang = (j[2] - 0.5) * 0.3
        ry, rx = (0.40 + 0.04 * j[3]) * ny, (0.34 + 0.04 * j[4]) * nx
        outer = _soft_ellipse(yy, xx, cy, cx, ry, rx, ang, edge_px)
        gm = torch.minimum(_soft_ellipse(yy, xx, cy, cx, 0.9 * ry, 0.9 * rx, ang, edge_px), outer)
        f_wm = 0.62 + 0.08 * j[5]
        wm = torch.minimum(_soft_ellipse(yy, xx, cy, cx, f_wm * ry, f_wm * rx, ang, edge_px), gm)
        vr_y, vr_x = (0.16 + 0.05 * j[6]) * ry, (0.07 + 0.02 * j[7]) * rx
        vent = torch.maximum(
            _soft_ellipse(yy, xx, cy - 0.05 * ry, cx - 0.22 * rx, vr_y, vr_x, ang + 0.3, edge_px),
            _soft_ellipse(yy, xx, cy - 0.05 * ry, cx + 0.22 * rx, vr_y, vr_x, ang - 0.3, edge_px),
        )
        out[0, i] = (outer - gm) + wm * vent  # CSF rim + ventricles
        out[1, i] = gm - wm
        out[2, i] = wm * (1 - vent)
    fractions = out.clamp_(0, 1).to(torch.float32)
    # float32 rounding can push the sum a hair above 1
    total = fractions.sum(0, keepdim=True)
    fractions = torch.where(total > 1, fractions / total, fractions)
    return Anatomy(
        fractions=fractions,
        class_names=("csf", "gm", "wm"),
        voxel_size_mm=(1.0, 1.0),
        source="phantom",
        split=split,
        slice_ids=tuple(f"phantom:{split}:z={i}" for i in range(int(n_slices))),
    )
