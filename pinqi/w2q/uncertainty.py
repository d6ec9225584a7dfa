"""Per-pixel uncertainty of W2Q's maps from the curvature of the fit objective.

At the fit's solution ``u = (PD, ln T1, ln T2)`` of
``Σ_c a_c |q_c(u) − ỹ_c / s_c|² + Σ_i λ_i (u_i − u_reg,i)²`` (:meth:`pinqi.w2q.model.W2Q._fit`),
the Gauss-Newton curvature is ``H = Jᵀ J + diag(λ)`` with ``J`` ``(T, 3)`` the pixel's Jacobian of
the weighted signals. Read as a Gaussian posterior with noise variance ``σ²`` (the mean squared
data residual of the sample, over its brain pixels and available contrasts), the covariance is
``σ² H⁻¹``; the standard deviations of ``ln T1`` and ``ln T2`` are relative ones, so
``std T1 ≈ T1 · std(ln T1)``. This is a local, model-conditional figure: it reflects the noise
and how strongly the protocol constrains each parameter, not the bias of the prior or of the
unknown per-contrast scales.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["fit_uncertainty"]


def fit_uncertainty(model: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, u: torch.Tensor,
                    lam: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Standard deviations ``(B, 3, Y, X)`` of (PD, T1 [s], T2 [s]) at the fit solution ``u``.

    Parameters
    ----------
    model
        The fit's pixel-wise forward model ``u (B, 3, Y, X) -> (B, T, Y, X)`` (weighted signals).
    y
        ``(B, T, Y, X)`` weighted data it was fitted to.
    u
        ``(B, 3, Y, X)`` solution (PD, ln T1, ln T2).
    lam
        ``(3,)`` prior weights λ of (PD, ln T1, ln T2).
    weight
        ``(B, T, Y, X)`` data weights (availability × brain mask, 0 or 1).

    Returns
    -------
    ``(B, 3, Y, X)``: std of PD (its units), T1 and T2 (seconds); 0 outside the brain.
    """
    u = u.detach()
    with torch.no_grad():
        residual = model(u) - y
        cols = []
        for i in range(3):
            direction = torch.zeros_like(u)
            direction[:, i] = 1
            cols.append(torch.func.jvp(model, (u,), (direction,))[1])  # (B, T, Y, X)
    jac = torch.stack(cols, -1).movedim(1, -2)  # (B, Y, X, T, 3)
    hessian = jac.transpose(-1, -2) @ jac + torch.diag_embed(lam.to(u.dtype).expand(3))
    inside = weight.amax(1) > 0  # (B, Y, X)
    n = weight.flatten(1).sum(1).clamp_min(1)
    sigma2 = (residual.pow(2) * weight).flatten(1).sum(1) / n  # (B,)
    variance = torch.linalg.inv(hessian).diagonal(dim1=-2, dim2=-1) * sigma2.view(-1, 1, 1, 1)  # (B, Y, X, 3)
    std = variance.clamp_min(0).sqrt().movedim(-1, 1)  # (B, 3, Y, X) of (PD, ln T1, ln T2)
    scale = torch.cat([torch.ones_like(u[:, :1]), u[:, 1:].exp()], 1)
    return std * scale * inside[:, None]
