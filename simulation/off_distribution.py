"""Draws that take T1-mapping samples off the brain's distribution (see :class:`simulation.T1MappingDataset`)."""

from __future__ import annotations

import math

import torch

__all__ = ["WIDE_T1_RANGE", "log_uniform", "share", "paint_inserts"]

#: T1 range [s] of the ``wide_t1`` and ``inserts`` draws (log-uniform).
WIDE_T1_RANGE: tuple[float, float] = (0.1, 5.0)


def log_uniform(g: torch.Generator, lo: float, hi: float, *size: int) -> torch.Tensor:
    """``size`` float64 values log-uniform in ``[lo, hi]``."""
    u = torch.rand(size, generator=g, dtype=torch.float64)
    return (math.log(lo) + u * (math.log(hi) - math.log(lo))).exp()


def share(name: str, value: float) -> float:
    """``value`` as a float in [0, 1], or a ValueError naming ``name``."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a share in [0, 1]; got {value!r}")
    return float(value)


def paint_inserts(m: dict[str, torch.Tensor], g: torch.Generator) -> None:
    """Paint 1–4 random ellipses with their own T1 and PD into the maps ``m`` (in place)."""
    ny, nx = m["pd"].shape
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, ny, dtype=torch.float64), torch.linspace(-1, 1, nx, dtype=torch.float64), indexing="ij"
    )
    for _ in range(int(torch.randint(1, 5, (), generator=g))):
        cy, cx, ay, ax, ang = (torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1).tolist()
        cy, cx = 0.6 * cy, 0.6 * cx
        ay, ax, ang = 0.06 + 0.1 * (ay + 1), 0.06 + 0.1 * (ax + 1), math.pi * ang
        u = (yy - cy) * math.cos(ang) + (xx - cx) * math.sin(ang)
        v = -(yy - cy) * math.sin(ang) + (xx - cx) * math.cos(ang)
        inside = (u / ay) ** 2 + (v / ax) ** 2 <= 1
        t1 = float(log_uniform(g, *WIDE_T1_RANGE, 1))
        pd = 0.2 + float(torch.rand((), generator=g, dtype=torch.float64))
        m["t1"] = torch.where(inside, torch.tensor(t1, dtype=m["t1"].dtype), m["t1"])
        m["pd"] = torch.where(inside, torch.tensor(pd, dtype=m["pd"].dtype), m["pd"])
        for key in ("brain", "tissue"):
            m[key] = torch.where(inside, torch.ones_like(m[key]), m[key])
