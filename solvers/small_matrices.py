"""Many tiny ``P × P`` systems at once, one per pixel: layout helpers and a Cholesky solver.

Per-pixel matrices are stored as ``(P, P, *S)`` and vectors as ``(P, *S)``, so that the loops
run over the ``P`` (small) indices and every operation is elementwise over the pixels ``S``.
"""

from __future__ import annotations

import torch

__all__ = ["small_cholesky", "small_cholesky_solve", "to_matrix_layout", "from_matrix_layout"]


def small_cholesky(a: torch.Tensor, rcond: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cholesky factors of many tiny SPD matrices, elementwise over the trailing dimensions.

    Parameters
    ----------
    a
        (P, P, *S) symmetric matrices (one per index of ``S``), P small.
    rcond
        A matrix counts as factorised only if every pivot exceeds ``rcond · max_i a_ii``.

    Returns
    -------
    ``L`` (P, P, *S) lower triangular (garbage but finite where not ok) and ``ok`` (*S) bool.
    """
    n = a.shape[0]
    diag = torch.stack([a[i, i] for i in range(n)])
    scale = diag.amax(0)
    ok = torch.isfinite(a).all(0).all(0) & (scale > 0)
    floor = rcond * scale
    lower: list[list[torch.Tensor | None]] = [[None] * n for _ in range(n)]
    zero = torch.zeros_like(scale)
    for j in range(n):
        s = a[j, j] - sum((lower[j][k] ** 2 for k in range(j)), zero)
        good = s > floor
        ok = ok & good
        ljj = torch.sqrt(torch.where(good, s, torch.ones_like(s)))
        lower[j][j] = ljj
        for i in range(j + 1, n):
            lower[i][j] = (a[i, j] - sum((lower[i][k] * lower[j][k] for k in range(j)), zero)) / ljj
    rows = [torch.stack([lower[i][j] if j <= i else zero for j in range(n)]) for i in range(n)]
    return torch.stack(rows), ok


def small_cholesky_solve(lower: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``L Lᵀ x = b`` per index of ``S``: ``lower`` (P, P, *S), ``b`` (P, *S) -> (P, *S)."""
    n = lower.shape[0]
    w: list[torch.Tensor] = []
    for i in range(n):
        acc = b[i] - sum((lower[i, k] * w[k] for k in range(i)), torch.zeros_like(b[i]))
        w.append(acc / lower[i, i])
    x: list[torch.Tensor] = [torch.zeros_like(b[0])] * n
    for i in reversed(range(n)):
        acc = w[i] - sum((lower[k, i] * x[k] for k in range(i + 1, n)), torch.zeros_like(b[i]))
        x[i] = acc / lower[i, i]
    return torch.stack(x)


def to_matrix_layout(v: torch.Tensor) -> torch.Tensor:
    """(B, P, Y, X) -> (P, B, 1, Y, X), the vector layout matching (P, P, B, 1, Y, X) matrices."""
    return v.transpose(0, 1).unsqueeze(2)


def from_matrix_layout(v: torch.Tensor) -> torch.Tensor:
    """(P, B, 1, Y, X) -> (B, P, Y, X)."""
    return v.squeeze(2).transpose(0, 1)
