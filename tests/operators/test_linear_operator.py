"""Operator algebra: adjointness and gram of compositions, sums, scalings, adjoints, identity."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from operators.fft import FFTOp
from operators.linear_operator import (
    AdjointOperator,
    IdentityOperator,
    LinearOperator,
    ProductOperator,
    ScaledOperator,
    SumOperator,
)
from operators.sampling_operator import MaskOp
from operators.sensitivity import SensitivityOp
from tests.helpers import (
    assert_adjoint,
    assert_gram,
    dense_matrix,
    inner,
    random_complex,
    tiny_cartesian_problem,
)

DTYPES = [pytest.param(torch.complex64, 1e-4, id="complex64"),
          pytest.param(torch.complex128, 1e-10, id="complex128")]


def _encoding(p) -> tuple[LinearOperator, LinearOperator, LinearOperator]:
    """Mask, FFT and sensitivity operators of a tiny problem (k-space (B, T, C, Y, X))."""
    return MaskOp(p.mask.unsqueeze(-3)), FFTOp(), SensitivityOp(p.csm)


def _scale_tensor(p) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return random_complex(p.y.shape[1:], g, p.y.dtype)  # (T, C, Y, X), broadcast over B


# name -> builder(problem) -> (operator, domain tensor, range tensor)
CASES: dict[str, Callable] = {
    "composition": lambda p: ((lambda m, f, s: m @ f @ s)(*_encoding(p)), p.x, p.y),
    "sum": lambda p: ((lambda m, f, s: m @ f @ s + f @ s)(*_encoding(p)), p.x, p.y),
    "difference": lambda p: ((lambda m, f, s: f @ s - m @ f @ s)(*_encoding(p)), p.x, p.y),
    "negation": lambda p: ((lambda m, f, s: -(f @ s))(*_encoding(p)), p.x, p.y),
    "scaled_left_float": lambda p: ((lambda m, f, s: 2.5 * (m @ f @ s))(*_encoding(p)), p.x, p.y),
    "scaled_right_complex": lambda p: ((lambda m, f, s: (f @ s) * (0.5 - 2j))(*_encoding(p)),
                                       p.x, p.y),
    "scaled_complex_tensor": lambda p: ((lambda m, f, s: (m @ f @ s) * _scale_tensor(p))(
        *_encoding(p)), p.x, p.y),
    "scaled_complex_tensor_left": lambda p: ((lambda m, f, s: _scale_tensor(p) * (f @ s))(
        *_encoding(p)), p.x, p.y),
    "adjoint_operator": lambda p: ((lambda m, f, s: (m @ f @ s).H)(*_encoding(p)), p.y, p.x),
    "adjoint_of_fft": lambda p: (FFTOp().H, p.y, p.y.flip(0)),
    "identity": lambda p: (IdentityOperator(), p.x, p.x.flip(0)),
    "fft": lambda p: (FFTOp(), p.x, p.x.flip(0)),
    "mask": lambda p: (MaskOp(p.mask), p.x, p.x.flip(0)),
    "sensitivity": lambda p: (SensitivityOp(p.csm), p.x, p.y),
}


@pytest.mark.parametrize("dtype, rtol", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_adjoint_and_gram(name: str, dtype: torch.dtype, rtol: float) -> None:
    p = tiny_cartesian_problem(dtype=dtype, seed=1)
    op, x, y = CASES[name](p)
    assert isinstance(op, LinearOperator)
    assert_adjoint(op, x, y, rtol)
    assert_gram(op, x, rtol=10 * rtol)


def test_algebra_builds_the_expected_classes() -> None:
    p = tiny_cartesian_problem()
    m, f, s = _encoding(p)
    assert isinstance(m @ f, ProductOperator)
    assert isinstance(m + f, SumOperator)
    assert isinstance(f - m, SumOperator)
    assert isinstance(-f, ScaledOperator)
    assert isinstance(2 * f, ScaledOperator) and isinstance(f * 2, ScaledOperator)
    assert isinstance(torch.tensor(1 + 1j) * f, ScaledOperator)
    assert isinstance(f.H, AdjointOperator)


def test_h_h_is_the_operator() -> None:
    p = tiny_cartesian_problem()
    m, f, s = _encoding(p)
    a = m @ f @ s
    for op in (a, f, m, s, IdentityOperator(), 2 * a):
        assert op.H.H is op


def test_algebra_values() -> None:
    """Composition, sum, scaling and adjoint compute what their names say."""
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=2)
    m, f, s = _encoding(p)
    torch.testing.assert_close((m @ f @ s)(p.x), m(f(s(p.x))))
    torch.testing.assert_close((f @ s + m @ f @ s)(p.x), f(s(p.x)) + m(f(s(p.x))))
    torch.testing.assert_close((f @ s - m @ f @ s)(p.x), f(s(p.x)) - m(f(s(p.x))))
    torch.testing.assert_close(((1 - 2j) * (f @ s))(p.x), (1 - 2j) * f(s(p.x)))
    torch.testing.assert_close(((1 - 2j) * (f @ s)).adjoint(p.y), (1 + 2j) * s.adjoint(f.adjoint(p.y)))
    torch.testing.assert_close(f.H(p.y), f.adjoint(p.y))
    torch.testing.assert_close(f.H.adjoint(p.y), f(p.y))
    ident = IdentityOperator()
    assert ident(p.x) is p.x and ident.adjoint(p.x) is p.x and ident.gram(p.x) is p.x


def test_non_operator_operands_raise_type_error() -> None:
    f = FFTOp()
    with pytest.raises(TypeError):
        f @ 3  # noqa: B018
    with pytest.raises(TypeError):
        f + 1.0  # noqa: B018
    with pytest.raises(TypeError):
        f * "two"  # noqa: B018


@pytest.mark.parametrize("name", ["composition", "sum", "scaled_complex_tensor", "adjoint_operator"])
def test_vjp_of_forward_is_the_adjoint(name: str) -> None:
    """torch's complex autograd returns the conjugate-Wirtinger gradient: for the real loss
    ``Re⟨v, A x⟩`` (and for ``grad_outputs=v``) the gradient w.r.t. ``x`` is ``Aᴴ v``."""
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=3)
    op, x, v = CASES[name](p)
    x = x.clone().requires_grad_(True)
    (g_loss,) = torch.autograd.grad(inner(v, op(x)).real, x)
    (g_vjp,) = torch.autograd.grad(op(x), x, grad_outputs=v)
    want = op.adjoint(v)
    torch.testing.assert_close(g_loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_vjp, want, rtol=1e-12, atol=1e-12)


def test_dense_matrix_of_1d_fft_is_the_centred_dft() -> None:
    n = 5
    got = dense_matrix(FFTOp(dims=(-1,)), (n,), torch.complex128).numpy()
    eye = np.eye(n)
    want = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(eye, axes=0), axis=0, norm="ortho"), axes=0)
    np.testing.assert_allclose(got, want, atol=1e-14)
    np.testing.assert_allclose(got.conj().T @ got, eye, atol=1e-14)


def test_assert_adjoint_catches_a_wrong_adjoint() -> None:
    """The helper itself must fail for an operator whose adjoint lacks a conjugate."""

    class Broken(LinearOperator):
        def __init__(self, s: torch.Tensor) -> None:
            super().__init__()
            self.s = s

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.s * x

        def adjoint(self, y: torch.Tensor) -> torch.Tensor:
            return self.s * y  # should be conj(s) * y

    p = tiny_cartesian_problem(dtype=torch.complex128)
    with pytest.raises(AssertionError, match="adjoint test failed"):
        assert_adjoint(Broken(random_complex(p.x.shape, torch.Generator().manual_seed(1),
                                             torch.complex128)), p.x, p.x.flip(0), 1e-4)


class _FastGram(LinearOperator):
    """``diag(d)`` whose gram is marked: it returns ``|d|² x`` and counts its calls."""

    def __init__(self, d: torch.Tensor) -> None:
        super().__init__()
        self.d = d
        self.gram_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d * x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.d.conj() * y

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        self.gram_calls += 1
        return self.d.abs().square() * x


@pytest.mark.parametrize("scale", [2.0, 1 - 2j, "tensor0d"])
def test_gram_carries_through_composition_and_scalar_scaling(scale: object) -> None:
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=4)
    fast = _FastGram(random_complex(p.y.shape[1:], torch.Generator().manual_seed(5), torch.complex128))
    s = torch.tensor(0.5 + 1.5j, dtype=torch.complex128) if scale == "tensor0d" else scale
    sens = SensitivityOp(p.csm)
    op = (s * (fast @ FFTOp())) @ sens  # (s D F) S
    got = op.gram(p.x)
    assert fast.gram_calls == 1  # the fast gram of the inner factor was used, once
    want = op.adjoint(op(p.x))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the same with |s|^2 spelled out: S^H F^H |s|^2 |D|^2 F S
    weight = abs(complex(s)) ** 2
    torch.testing.assert_close(got, sens.adjoint(FFTOp().adjoint(weight * fast.gram(FFTOp()(sens(p.x))))))


def test_tensor_scale_gram_is_exact_and_skips_the_fast_gram() -> None:
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=6)
    fast = _FastGram(random_complex(p.y.shape[1:], torch.Generator().manual_seed(7), torch.complex128))
    op = (_scale_tensor(p) * (fast @ FFTOp())) @ SensitivityOp(p.csm)
    assert_gram(op, p.x, rtol=1e-12)
    assert fast.gram_calls == 0  # a non-scalar scale does not commute with the gram


def test_tensors_recurse_and_skip_private_caches() -> None:
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=8)
    m, f, s = _encoding(p)
    extra, cache, scale = torch.ones(2), torch.ones(3), torch.tensor(3.0)
    s.extra = [extra, {"again": extra}]  # type: ignore[attr-defined]
    s._cache = cache  # type: ignore[attr-defined]
    op = (m @ f @ s).H + scale * (f @ s).H
    ids = [id(t) for t in op.tensors()]
    assert len(ids) == len(set(ids))  # each once
    assert set(ids) == {id(m.mask), id(p.csm), id(extra), id(scale)}
