"""Coil sensitivity weighting: an image series becomes one image per coil.

``S x = csm · x`` maps ``x (*b, T, Y, X)`` to coil images ``(*b, T, C, Y, X)`` with
``csm (*b, C, Y, X)`` broadcast over ``T``; the adjoint combines coils,
``Sᴴ k = Σ_C conj(csm) · k``. The coil maps may have fewer (or size-1) batch dims than the image
(shared maps); the image is never broadcast against the maps' batch.
"""

from __future__ import annotations

import torch

from operators._validation import (
    require_batch_broadcast,
    require_complex,
    require_dtype,
    require_finite,
    require_min_ndim,
    require_nonzero,
    require_trailing,
)
from operators.linear_operator import LinearOperator


def check_csm(csm: object) -> torch.Tensor:
    """Validate coil maps: a finite complex tensor ``(*b, C, Y, X)``, not all zero for any sample;
    returned unchanged."""
    csm = require_complex("csm", csm)
    require_min_ndim("csm", csm, 3, "(*b, C, Y, X)")
    require_finite("csm", csm)
    require_nonzero("csm", csm, 3, "coil maps with no sensitivity anywhere make every image zero")
    return csm


def check_image(x: object, csm: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Validate an image series ``(*b, T, Y, X)`` against coil maps ``(*b, C, Y, X)``."""
    x = require_complex(name, x)
    require_min_ndim(name, x, 3, "(*b, T, Y, X)")
    y, xx = csm.shape[-2:]
    require_trailing(name, x, (y, xx), "(*b, T, Y, X)", f"Y, X = {(y, xx)} of the coil maps")
    require_dtype(name, x, csm.dtype, "the dtype of the coil maps")
    require_batch_broadcast("csm", csm.shape[:-3], name, x.shape[:-3])
    return x


def check_coil_kspace(k: object, csm: torch.Tensor, name: str = "k") -> torch.Tensor:
    """Validate coil data ``(*b, T, C, Y, X)`` against coil maps ``(*b, C, Y, X)``."""
    k = require_complex(name, k)
    require_min_ndim(name, k, 4, "(*b, T, C, Y, X)")
    c, y, xx = csm.shape[-3:]
    require_trailing(name, k, (c, y, xx), "(*b, T, C, Y, X)",
                     f"C, Y, X = {(c, y, xx)} of the coil maps")
    require_dtype(name, k, csm.dtype, "the dtype of the coil maps")
    require_batch_broadcast("csm", csm.shape[:-3], name, k.shape[:-4])
    return k


def coil_combine(csm: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``Σ_C conj(csm) · k``: coil maps ``(*b, C, Y, X)``, coil images ``(*b, T, C, Y, X)`` ->
    ``(*b, T, Y, X)`` (no validation)."""
    # vecdot conjugates its first argument and fuses multiply and sum.
    return torch.linalg.vecdot(csm.unsqueeze(-4), k, dim=-3)


class SensitivityOp(LinearOperator):
    """Multiplication by coil sensitivity maps.

    Parameters
    ----------
    csm
        Complex coil maps ``(*b, C, Y, X)``; gradients reach them through autograd.

    Notes
    -----
    forward: ``x (*b, T, Y, X) -> csm[..., None, :, :, :] · x[..., :, None, :, :]``
    ``(*b, T, C, Y, X)``; adjoint: ``k (*b, T, C, Y, X) -> Σ_C conj(csm) · k (*b, T, Y, X)``.
    Image and data must have the dtype of ``csm``.
    """

    def __init__(self, csm: torch.Tensor) -> None:
        super().__init__()
        self.csm = check_csm(csm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coil images ``(*b, T, C, Y, X)`` of the image series ``x (*b, T, Y, X)``."""
        x = check_image(x, self.csm)
        return self.csm.unsqueeze(-4) * x.unsqueeze(-3)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Coil combination ``Σ_C conj(csm) · y`` of ``y (*b, T, C, Y, X)`` -> ``(*b, T, Y, X)``."""
        y = check_coil_kspace(y, self.csm, "y")
        return coil_combine(self.csm, y)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_C |csm|² · x`` ``(*b, T, Y, X)``."""
        x = check_image(x, self.csm)
        weight = (self.csm.real.square() + self.csm.imag.square()).sum(-3)
        return weight.unsqueeze(-3) * x
