"""Cartesian sampling as a linear operator: multiplication by a real 0/1 mask.

Masks are bool or real floating tensors with values in ``[0, 1]`` (binary in practice; fractional
weights are accepted and then the gram is ``mask²``). A mask is broadcast over the operand by the
usual rules, but never enlarges it: ``mask (T, Y, 1)`` serves ``x (B, T, Y, X)``, while a mask
with more batch entries than ``x`` is an error.
"""

from __future__ import annotations

import torch

from operators._validation import require_finite, require_real, require_tensor, shape_str
from operators.linear_operator import LinearOperator


def check_mask(name: str, mask: object) -> tuple[torch.Tensor, bool]:
    """Validate a sampling mask and return it as a real floating tensor.

    Parameters
    ----------
    name
        Name quoted in error messages.
    mask
        Bool or real floating tensor with values in ``[0, 1]``.

    Returns
    -------
    mask
        The mask; bool masks are converted to ``float32``, floating masks are returned as given
        (so that gradients can reach a learned mask).
    binary
        Whether every value is 0 or 1 (then ``mask² == mask``).

    Raises
    ------
    TypeError
        Complex or integer masks.
    ValueError
        Values outside ``[0, 1]`` or NaN. (An all-zero mask is a valid operator here;
        :class:`operators.MultiCoilCartesianOp` refuses one.)
    """
    mask = require_real(name, mask)
    if mask.dtype == torch.bool:
        return mask.to(torch.float32), True
    require_finite(name, mask)
    with torch.no_grad():
        lo, hi = (float(v) for v in torch.aminmax(mask)) if mask.numel() else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} must have values in [0, 1]; got values in [{lo:g}, {hi:g}]")
        binary = bool(((mask == 0) | (mask == 1)).all())
    return mask, binary


def mask_for(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mask`` in the real dtype matching ``x`` (avoids silent promotion to a wider dtype)."""
    real_dtype = x.real.dtype if x.is_complex() else x.dtype
    return mask.to(dtype=real_dtype, device=x.device)


class MaskOp(LinearOperator):
    """Elementwise multiplication by a sampling mask; self-adjoint.

    Parameters
    ----------
    mask
        Bool or real tensor with values in ``[0, 1]``, broadcastable to the operand's shape,
        e.g. ``(*b, T, Y, X)`` for k-space ``(*b, T, Y, X)`` or ``(*b, T, 1, Y, X)`` for
        multi-coil k-space ``(*b, T, C, Y, X)``.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask, self.binary = check_mask("mask", mask)

    def _check(self, name: str, x: object) -> torch.Tensor:
        x = require_tensor(name, x)
        try:
            ok = torch.broadcast_shapes(self.mask.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{name} must have a shape that the mask {shape_str(self.mask.shape)} broadcasts "
                f"to; got {shape_str(x.shape)}"
            )
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``mask · x``; output has the shape of ``x``."""
        x = self._check("x", x)
        return x * mask_for(self.mask, x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``mask · y`` (the mask is real, so the operator is self-adjoint)."""
        return self.forward(y)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``mask² · x`` (``mask · x`` for a binary mask)."""
        x = self._check("x", x)
        m = mask_for(self.mask, x)
        return x * m if self.binary else x * (m * m)
