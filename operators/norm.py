"""Operator norm (largest singular value) by power iteration on the normal operator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from operators.linear_operator import LinearOperator


def _sample_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each sample (leading dim), shaped ``(B, 1, ..., 1)`` like ``v``."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).reshape(
        (-1,) + (1,) * (v.ndim - 1)
    )


def operator_norm(
    op: LinearOperator,
    x0: torch.Tensor | Sequence[int],
    max_iter: int = 50,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Largest singular value ``‖A‖₂`` of ``op``, one per sample, by power iteration on ``AᴴA``.

    The leading dim of the domain indexes independent samples (the operator must act on each
    sample separately, as every operator of this package does over its batch dim).

    Parameters
    ----------
    op
        The operator ``A``; only ``op.gram`` is used.
    x0
        Start vector ``(B, ...)`` in the domain of ``op``, or the domain shape, in which case a
        standard complex normal start is drawn with ``generator``. A sample whose start is zero
        is replaced by a random one.
    max_iter
        Maximum number of gram applications.
    tol
        Stop when every sample's eigenvalue estimate changed by at most ``tol`` relative.
    generator
        Random generator for random starts (the global RNG is never used).
    dtype, device
        dtype and device of a random start (only when ``x0`` is a shape).

    Returns
    -------
    Real tensor ``(B,)``: ``sqrt(λ_max(AᴴA))`` per sample, detached (computed without grad).

    Notes
    -----
    The eigenvalue estimate is the Rayleigh quotient ``⟨v, AᴴA v⟩ = ‖A v‖²`` of the normalised
    iterate; it approaches ``λ_max`` from below.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    with torch.no_grad():
        if isinstance(x0, torch.Tensor):
            if x0.ndim < 1:
                raise ValueError(f"x0 must have shape (B, ...); got {tuple(x0.shape)}")
            v = x0.detach().clone()
        else:
            shape = tuple(int(s) for s in x0)
            if len(shape) < 1:
                raise ValueError(f"x0 must be a shape (B, ...) with at least one dim; got {shape}")
            v = torch.zeros(shape, dtype=dtype, device=device)
        norm = _sample_norm(v)
        zero = norm.reshape(-1) == 0
        if bool(zero.any()):
            if not (v.is_complex() or v.is_floating_point()):
                raise TypeError(f"x0 must be a floating or complex tensor; got {v.dtype}")
            noise = torch.randn(v.shape, generator=generator, dtype=v.dtype, device="cpu").to(v.device)
            v[zero] = noise[zero]
            norm = _sample_norm(v)
        v = v / norm
        lam = torch.zeros(v.shape[0], dtype=norm.dtype, device=v.device)
        for _ in range(max_iter):
            w = op.gram(v)
            # Rayleigh quotient ⟨v, AᴴA v⟩ (real, ≥ 0 up to rounding).
            lam_new = (v.conj() * w).reshape(v.shape[0], -1).sum(1).real.clamp_min(0)
            w_norm = _sample_norm(w)
            v = w / torch.where(w_norm > 0, w_norm, torch.ones_like(w_norm))
            converged = bool(((lam_new - lam).abs() <= tol * lam_new).all())
            lam = lam_new
            if converged:
                break
        return lam.sqrt()
