"""Linear operators as ``nn.Module`` s with an algebra (adjoint, composition, sum, scaling).

Every concrete operator implements :meth:`LinearOperator.forward` and
:meth:`LinearOperator.adjoint`; it may override :meth:`LinearOperator.gram` with a faster
evaluation of ``AᴴA``. Tensors an operator is built from (coil maps, density weights) are kept
as ordinary attributes so that autograd reaches them; :meth:`LinearOperator.tensors` lists them.

Fast normal operators carry through the algebra: ``(A B).gram = Bᴴ (A.gram) B`` and
``(s A).gram = |s|² A.gram`` for a scalar ``s``, so an operator built as ``nufft @ sensitivity``
keeps the NUFFT's Toeplitz gram.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Number

import torch
from torch import nn


class LinearOperator(nn.Module):
    """Base class of all linear operators.

    Subclasses implement ``forward(x)`` (``A x``) and ``adjoint(y)`` (``Aᴴ y``).

    Algebra
    -------
    ``A.H``        the adjoint, itself a ``LinearOperator`` (``A.H.H`` is ``A``)
    ``A.gram(x)``  ``AᴴA x``; override for a faster normal operator
    ``A @ B``      composition ``x -> A(B(x))``
    ``A + B``      sum, ``A - B`` difference
    ``s * A``      scaling by a Python number or a tensor broadcastable to the output
    ``A.tensors()`` the tensors the operator is built from (recursing through the algebra)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement adjoint")

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the normal operator ``AᴴA``.

        Parameters
        ----------
        x
            Tensor in the operator's domain.

        Returns
        -------
        Tensor of the same shape as ``x``.
        """
        return self.adjoint(self.forward(x))

    def tensors(self) -> list[torch.Tensor]:
        """The tensors this operator is built from, each once, recursing into operands.

        Lists parameters, buffers and public tensor attributes (also inside lists, tuples and
        dicts, two levels deep) of this operator, then those of its child modules (operands of a
        composition, sum, scaling; a child ``LinearOperator`` answers with its own
        :meth:`tensors`). Private attributes (``_name``: caches such as a Toeplitz kernel) are
        not listed.

        Returns
        -------
        List of tensors (coil maps, trajectories, density weights, scales, ...).
        """
        found: dict[int, torch.Tensor] = {}
        for t in self._own_tensors():
            found.setdefault(id(t), t)
        for child in self.children():
            inner = child.tensors() if isinstance(child, LinearOperator) else [
                *child.parameters(), *child.buffers()]
            for t in inner:
                found.setdefault(id(t), t)
        return list(found.values())

    def _own_tensors(self) -> Iterator[torch.Tensor]:
        yield from self.parameters(recurse=False)
        yield from self.buffers(recurse=False)
        for name, value in vars(self).items():
            if not name.startswith("_"):
                yield from _tensors_in(value, depth=2)

    @property
    def H(self) -> LinearOperator:  # noqa: N802 - mathematical notation
        """The adjoint operator."""
        return AdjointOperator(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return ProductOperator(self, other)

    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator(self, other)

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator(self, ScaledOperator(other, -1.0))

    def __neg__(self) -> LinearOperator:
        return ScaledOperator(self, -1.0)

    def __mul__(self, scale: Number | torch.Tensor) -> LinearOperator:
        if not isinstance(scale, (Number, torch.Tensor)):
            return NotImplemented
        return ScaledOperator(self, scale)

    __rmul__ = __mul__


def _tensors_in(value: object, depth: int) -> Iterator[torch.Tensor]:
    """Tensors in ``value`` (itself, or inside lists/tuples/dicts up to ``depth`` levels)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth > 0 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item, depth - 1)
    elif depth > 0 and isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item, depth - 1)


def _is_scalar(scale: Number | torch.Tensor) -> bool:
    return not isinstance(scale, torch.Tensor) or scale.ndim == 0


class AdjointOperator(LinearOperator):
    """The adjoint ``Aᴴ`` of an operator; its own adjoint is the original operator."""

    def __init__(self, operator: LinearOperator) -> None:
        super().__init__()
        self.operator = operator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.forward(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.operator


class ProductOperator(LinearOperator):
    """Composition ``A B``: ``x -> A(B(x))``."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        super().__init__()
        self.outer = outer
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``Bᴴ (A.gram) B x``: uses the outer operator's (possibly fast) normal operator."""
        return self.inner.adjoint(self.outer.gram(self.inner(x)))


class SumOperator(LinearOperator):
    """Sum ``A + B`` of two operators with the same domain and range."""

    def __init__(self, first: LinearOperator, second: LinearOperator) -> None:
        super().__init__()
        self.first = first
        self.second = second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.first(x) + self.second(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.first.adjoint(y) + self.second.adjoint(y)


class ScaledOperator(LinearOperator):
    """``s A``: the output of ``A`` multiplied by a number or a broadcastable tensor ``s``."""

    def __init__(self, operator: LinearOperator, scale: Number | torch.Tensor) -> None:
        super().__init__()
        self.operator = operator
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator(x) * self.scale

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        scale = self.scale.conj() if isinstance(self.scale, torch.Tensor) else complex(self.scale).conjugate()
        if not isinstance(self.scale, torch.Tensor) and complex(self.scale).imag == 0:
            scale = complex(self.scale).real
        return self.operator.adjoint(y * scale)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``|s|² (A.gram) x`` for a scalar ``s``; ``Aᴴ(|s|² A x)`` for a tensor ``s``."""
        if not _is_scalar(self.scale):
            return super().gram(x)
        s = self.scale
        weight = s.abs().square() if isinstance(s, torch.Tensor) else abs(complex(s)) ** 2
        return self.operator.gram(x) * weight


class IdentityOperator(LinearOperator):
    """The identity; its gram is the identity too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        return x
