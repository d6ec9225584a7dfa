"""Shared helpers for operator and solver tests: random tensors, dot-product adjoint test, gram
check, dense matrices of operators and a tiny multi-coil Cartesian problem.

Conventions: ``⟨a, b⟩ = Σ conj(a) · b`` over all elements (``torch.vdot`` of the flattened
tensors). Operators are ``operators.LinearOperator`` s (anything with ``forward``/``adjoint``/
``gram`` works).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def random_complex(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Standard complex normal tensor (real and imaginary parts each ``N(0, 1/2)``).

    Parameters
    ----------
    shape
        Output shape.
    generator
        CPU generator; ``None`` uses a fresh generator seeded with 0 (never the global RNG).
    dtype
        ``complex64`` or ``complex128``.
    """
    if not dtype.is_complex:
        raise TypeError(f"dtype must be complex64 or complex128; got {dtype}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``⟨a, b⟩ = Σ conj(a) · b`` over all elements (0-dim tensor); shapes must be equal."""
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return torch.vdot(a.reshape(-1), b.reshape(-1))


def assert_adjoint(op, x: torch.Tensor, y: torch.Tensor, rtol: float) -> tuple[complex, complex]:
    """Dot-product test ``⟨A x, y⟩ == ⟨x, Aᴴ y⟩``.

    Parameters
    ----------
    op
        Operator with ``op(x)`` and ``op.adjoint(y)``.
    x
        Tensor in the domain.
    y
        Tensor in the range (same shape as ``op(x)``).
    rtol
        Tolerance relative to ``‖A x‖ ‖y‖`` (the Cauchy-Schwarz bound of both sides), e.g. 1e-4
        for complex64 and 1e-10 for complex128. A wrong adjoint (a missing conjugate, shift or
        scale) gives an error of the order of ``|⟨A x, y⟩|`` itself, far above these bounds.

    Returns
    -------
    ``(⟨A x, y⟩, ⟨x, Aᴴ y⟩)`` as Python complex numbers.
    """
    ax = op(x)
    ahy = op.adjoint(y)
    assert ax.shape == y.shape, f"A x has shape {tuple(ax.shape)}, y has {tuple(y.shape)}"
    assert ahy.shape == x.shape, f"Aᴴ y has shape {tuple(ahy.shape)}, x has {tuple(x.shape)}"
    lhs = complex(inner(ax, y))
    rhs = complex(inner(x, ahy))
    scale = float(torch.linalg.vector_norm(ax) * torch.linalg.vector_norm(y))
    assert scale > 0, "degenerate adjoint test: A x or y is zero"
    err = abs(lhs - rhs)
    assert err <= rtol * scale, (
        f"adjoint test failed: <Ax,y> = {lhs}, <x,A^H y> = {rhs}, |diff| = {err:.3e} > "
        f"rtol * |Ax| |y| = {rtol * scale:.3e}"
    )
    return lhs, rhs


def assert_gram(op, x: torch.Tensor, rtol: float) -> None:
    """Check ``op.gram(x) == op.adjoint(op(x))`` in the relative norm ``‖·‖ / ‖Aᴴ A x‖``.

    Parameters
    ----------
    op
        Operator with ``forward``, ``adjoint`` and ``gram``.
    x
        Tensor in the domain.
    rtol
        Relative tolerance, e.g. 1e-5 (complex64) or 1e-12 (complex128).
    """
    got = op.gram(x)
    want = op.adjoint(op(x))
    assert got.shape == want.shape, f"gram shape {tuple(got.shape)} != {tuple(want.shape)}"
    ref = float(torch.linalg.vector_norm(want))
    err = float(torch.linalg.vector_norm(got - want))
    assert ref > 0, "degenerate gram test: AᴴA x is zero"
    assert err <= rtol * ref, f"gram != adjoint(forward): relative error {err / ref:.3e} > {rtol:g}"


def dense_matrix(op, in_shape: Sequence[int], dtype: torch.dtype = torch.complex128,
                 batched: bool = False) -> torch.Tensor:
    """The matrix ``(M, N)`` of a complex-linear operator, column ``j`` = ``op(e_j).flatten()``.

    Parameters
    ----------
    op
        Operator acting on tensors of shape ``in_shape``.
    in_shape
        Domain shape; ``N = prod(in_shape)`` unit vectors are applied, so keep it tiny.
    dtype
        dtype of the unit vectors.
    batched
        Apply all unit vectors in one call, stacked along a new leading dim ``(N, *in_shape)``.
        Only for operators that treat extra leading dims as independent batch dims (e.g.
        ``MultiCoilCartesianOp``, whose coil maps broadcast over them); the default applies
        them one by one.

    Returns
    -------
    Tensor ``(M, N)`` with ``M`` = number of elements of ``op(x)``; the flattening is row-major
    (``torch.reshape``) on both sides.
    """
    in_shape = tuple(in_shape)
    n = 1
    for s in in_shape:
        n *= s
    eye = torch.eye(n, dtype=dtype)
    if batched:
        out = op(eye.reshape((n,) + in_shape))
        return out.reshape(n, -1).transpose(0, 1)
    return torch.stack([op(eye[j].reshape(in_shape)).reshape(-1) for j in range(n)], dim=1)


@dataclass
class TinyCartesianProblem:
    """A tiny multi-coil Cartesian problem (see :func:`tiny_cartesian_problem`).

    Attributes
    ----------
    csm
        Coil maps ``(B, C, Y, X)`` complex.
    mask
        Bool mask ``(B, T, Y, X)``.
    x
        Random image series ``(B, T, Y, X)``.
    y
        Random full-grid k-space ``(B, T, C, Y, X)``.
    """

    csm: torch.Tensor
    mask: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor


def tiny_cartesian_problem(
    B: int = 2,  # noqa: N803 - shape names
    T: int = 3,  # noqa: N803
    C: int = 4,  # noqa: N803
    Y: int = 8,  # noqa: N803
    X: int = 8,  # noqa: N803
    dtype: torch.dtype = torch.complex64,
    seed: int = 0,
    mask_kind: str = "1d",
) -> TinyCartesianProblem:
    """Random coil maps, mask, image and k-space for operator tests.

    Parameters
    ----------
    B, T, C, Y, X
        Batch, contrasts, coils and image size.
    dtype
        Complex dtype of ``csm``, ``x``, ``y``.
    seed
        Seed of the generator (same seed, same problem).
    mask_kind
        ``"1d"``: random phase-encode lines (constant along X, stored as the full
        ``(B, T, Y, X)`` so that the operator has to detect it) with the centre line always
        sampled; ``"2d"``: random points, centre always sampled. About half is sampled; every
        ``(b, t)`` differs.

    Returns
    -------
    :class:`TinyCartesianProblem`. Coil maps are random (not normalised), which makes
    ``AᴴA`` well away from a multiple of the identity.
    """
    g = torch.Generator().manual_seed(seed)
    csm = random_complex((B, C, Y, X), g, dtype)
    if mask_kind == "1d":
        lines = torch.rand((B, T, Y, 1), generator=g) < 0.5
        lines[:, :, Y // 2] = True
        mask = lines.expand(B, T, Y, X).clone()
    elif mask_kind == "2d":
        mask = torch.rand((B, T, Y, X), generator=g) < 0.5
        mask[:, :, Y // 2, X // 2] = True
    else:
        raise ValueError(f"mask_kind must be '1d' or '2d'; got {mask_kind!r}")
    x = random_complex((B, T, Y, X), g, dtype)
    y = random_complex((B, T, C, Y, X), g, dtype)
    return TinyCartesianProblem(csm=csm, mask=mask, x=x, y=y)
