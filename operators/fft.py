"""Centred, orthonormal FFT.

Centring convention (the one place it is defined for the whole package): the array centre
``N // 2`` is the origin both in image space and in k-space, so

    FFT(x)  = fftshift(fftn(ifftshift(x, dims), dim=dims, norm="ortho"), dims)
    IFFT(k) = fftshift(ifftn(ifftshift(k, dims), dim=dims, norm="ortho"), dims)

``norm="ortho"`` makes the transform unitary: ``IFFT`` is both its inverse and its adjoint, and
``||FFT(x)|| = ||x||``. For odd sizes ``ifftshift`` and ``fftshift`` differ (they roll by
``-(N // 2)`` and ``+(N // 2)``); the formulas above hold for every size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from operators._validation import require_finite, require_min_ndim, require_tensor
from operators.linear_operator import LinearOperator


def _centered(transform: Callable[..., torch.Tensor], x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    dims = tuple(dims)
    return torch.fft.fftshift(transform(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def centered_fft(x: torch.Tensor, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Centred orthonormal FFT of ``x`` along ``dims`` (see the module docstring).

    Parameters
    ----------
    x
        Tensor of any shape (real input gives a complex result).
    dims
        Dimensions to transform.

    Returns
    -------
    Complex tensor of the shape of ``x``.
    """
    return _centered(torch.fft.fftn, x, dims)


def centered_ifft(k: torch.Tensor, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Centred orthonormal inverse FFT of ``k`` along ``dims``; inverse and adjoint of
    :func:`centered_fft`.

    Parameters
    ----------
    k
        Tensor of any shape.
    dims
        Dimensions to transform.

    Returns
    -------
    Complex tensor of the shape of ``k``.
    """
    return _centered(torch.fft.ifftn, k, dims)


class FFTOp(LinearOperator):
    """Centred orthonormal FFT along ``dims`` as a linear operator.

    Unitary: the adjoint is the inverse and ``gram`` is the identity.

    Parameters
    ----------
    dims
        Dimensions to transform, default the last two (``Y, X`` of an image ``(*b, T, Y, X)``).
    """

    def __init__(self, dims: Sequence[int] = (-2, -1)) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if len(dims) == 0:
            raise ValueError("dims must name at least one dimension; got ()")
        if len(set(dims)) != len(dims):
            raise ValueError(f"dims must be distinct; got {dims}")
        self.dims = dims
        # Smallest rank for which every entry of dims names a dimension.
        self._min_ndim = max(d + 1 if d >= 0 else -d for d in dims)

    def _check(self, name: str, t: object) -> torch.Tensor:
        t = require_tensor(name, t)
        require_min_ndim(name, t, self._min_ndim, f"with dims {self.dims} to transform")
        return t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Centred FFT of ``x`` along ``self.dims``; output has the shape of ``x``."""
        return centered_fft(require_finite("x", self._check("x", x)), self.dims)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Centred inverse FFT of ``y`` along ``self.dims``; output has the shape of ``y``."""
        return centered_ifft(require_finite("y", self._check("y", y)), self.dims)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """Identity (the transform is unitary)."""
        return self._check("x", x)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"
