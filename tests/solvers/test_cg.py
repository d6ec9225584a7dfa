"""Batched conjugate gradient: accuracy per sample, freezing, warm start, zero data, autograd."""

from __future__ import annotations

import pytest
import torch

from operators.linear_operator import LinearOperator
from solvers.cg import CGResult, batched_real_dot, cg


@pytest.fixture(autouse=True)
def _single_thread():  # type: ignore[no-untyped-def]
    """Tiny systems only lose from intra-op threading (and a shared CI core); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _hpd(batch: int, n: int, dtype: torch.dtype, seed: int, shift: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(batch, n, n, dtype=dtype, generator=g)
    return m @ m.mH + shift * torch.eye(n, dtype=dtype)


class MatrixOp(LinearOperator):
    """x (B, *s) -> per-sample matrix times the flattened vector, reshaped back."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.matrix @ x.reshape(x.shape[0], -1, 1)).reshape(x.shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (self.matrix.mH @ y.reshape(y.shape[0], -1, 1)).reshape(y.shape)


def _solve(h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(h, b.reshape(b.shape[0], -1)).reshape(b.shape)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_matches_dense_solve_per_sample(dtype: torch.dtype) -> None:
    h = _hpd(3, 8, dtype, seed=1)
    b = torch.randn(3, 2, 4, dtype=dtype, generator=torch.Generator().manual_seed(2))
    result = cg(MatrixOp(h), b, tol=1e-12, max_iter=100)
    assert isinstance(result, CGResult)
    torch.testing.assert_close(result.x, _solve(h, b), rtol=1e-9, atol=1e-10)
    assert result.converged.all()
    assert result.iterations.dtype == torch.long and result.iterations.shape == (3,)
    assert result.residual_norm.dtype == torch.float64 and result.residual_norm.shape == (3,)
    true_residual = (b - MatrixOp(h)(result.x)).reshape(3, -1).norm(dim=1)
    assert (true_residual <= 1e-10 * b.reshape(3, -1).norm(dim=1)).all()


def test_real_inner_product_of_complex_vectors() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 4, dtype=torch.complex128, generator=g)
    c = torch.randn(2, 3, 4, dtype=torch.complex128, generator=g)
    expected = (a.conj() * c).sum(dim=(1, 2)).real
    torch.testing.assert_close(batched_real_dot(a, c), expected)
    torch.testing.assert_close(batched_real_dot(a.conj(), c), (a * c).sum(dim=(1, 2)).real)


def test_converged_sample_freezes_while_others_continue() -> None:
    n = 10
    h = _hpd(3, n, torch.complex128, seed=4, shift=0.1)
    h[0] = 2.0 * torch.eye(n, dtype=torch.complex128)  # converges in one step
    b = torch.randn(3, n, dtype=torch.complex128, generator=torch.Generator().manual_seed(5))
    full = cg(MatrixOp(h), b, tol=1e-12, max_iter=200)
    assert full.iterations[0] == 1
    assert (full.iterations[1:] > 3).all()
    assert full.converged.all()
    torch.testing.assert_close(full.x, _solve(h, b), rtol=1e-9, atol=1e-10)
    # After its own convergence sample 0 receives zero steps: bitwise equal to a 1-step run.
    one = cg(MatrixOp(h), b, tol=1e-12, max_iter=1)
    assert torch.equal(one.x[0], full.x[0])
    assert not one.converged[1:].any()


def test_zero_rhs_gives_zeros_without_nan() -> None:
    h = _hpd(3, 6, torch.complex128, seed=6)
    b = torch.randn(3, 6, dtype=torch.complex128, generator=torch.Generator().manual_seed(7))
    b[1] = 0
    x0 = torch.ones_like(b)
    for start in (None, x0):
        result = cg(MatrixOp(h), b, x0=start, tol=1e-10)
        assert torch.isfinite(torch.view_as_real(result.x)).all()
        assert torch.equal(result.x[1], torch.zeros_like(result.x[1]))
        assert result.iterations[1] == 0 and result.converged[1]
        torch.testing.assert_close(result.x[[0, 2]], _solve(h[[0, 2]], b[[0, 2]]), rtol=1e-8, atol=1e-9)
    everything_zero = cg(MatrixOp(h), torch.zeros_like(b))
    assert torch.equal(everything_zero.x, torch.zeros_like(b)) and everything_zero.converged.all()


def test_warm_start_from_solution_takes_zero_iterations() -> None:
    h = _hpd(2, 6, torch.complex128, seed=8)
    b = torch.randn(2, 6, dtype=torch.complex128, generator=torch.Generator().manual_seed(9))
    exact = _solve(h, b)
    result = cg(MatrixOp(h), b, x0=exact, tol=1e-8)
    assert result.iterations.tolist() == [0, 0]
    assert torch.equal(result.x, exact)
    assert result.converged.all()
    exact_copy = exact.clone()
    cg(MatrixOp(h), b, x0=exact + 1, tol=1e-8)
    assert torch.equal(exact, exact_copy)  # x0 is not modified in place


def test_linear_operator_and_callable_agree_and_inputs_untouched() -> None:
    h = _hpd(2, 6, torch.float64, seed=10)
    op = MatrixOp(h)
    b = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    b_copy = b.clone()
    via_op = cg(op, b, tol=1e-12)
    via_callable = cg(lambda v: op(v), b, tol=1e-12)
    assert torch.equal(via_op.x, via_callable.x)
    assert torch.equal(b, b_copy)
    # A.gram as the callable: normal equations of a non-square per-sample matrix.
    a = torch.randn(2, 9, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    normal = cg(MatrixOpRect(a).gram, b, tol=1e-12)
    torch.testing.assert_close(normal.x, _solve(a.mT @ a, b), rtol=1e-8, atol=1e-9)


class MatrixOpRect(LinearOperator):
    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.matrix @ x.unsqueeze(-1)).squeeze(-1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (self.matrix.mH @ y.unsqueeze(-1)).squeeze(-1)


def test_max_iter_limits_and_reports_non_convergence() -> None:
    h = _hpd(2, 8, torch.complex128, seed=13, shift=0.01)
    b = torch.randn(2, 8, dtype=torch.complex128, generator=torch.Generator().manual_seed(14))
    result = cg(MatrixOp(h), b, tol=1e-12, max_iter=2)
    assert result.iterations.tolist() == [2, 2]
    assert not result.converged.any()
    true_residual = (b - MatrixOp(h)(result.x)).norm(dim=1)
    torch.testing.assert_close(result.residual_norm, true_residual, rtol=1e-8, atol=1e-12)
    assert (result.relative_residual > 1e-12).all()
    zero = cg(MatrixOp(h), b, max_iter=0)
    assert torch.equal(zero.x, torch.zeros_like(b)) and zero.iterations.tolist() == [0, 0]


def test_tol_zero_runs_exactly_max_iter_without_nan() -> None:
    h = _hpd(2, 4, torch.complex128, seed=15)
    b = torch.randn(2, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(16))
    result = cg(MatrixOp(h), b, tol=0.0, max_iter=30)  # exact after ~4 steps, then p -> 0
    assert result.iterations.tolist() == [30, 30]
    assert torch.isfinite(torch.view_as_real(result.x)).all()
    torch.testing.assert_close(result.x, _solve(h, b), rtol=1e-8, atol=1e-9)


def test_breakdown_on_singular_operator_is_finite() -> None:
    b = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(17))
    result = cg(lambda v: torch.zeros_like(v), b, tol=1e-8, max_iter=20)
    assert torch.isfinite(result.x).all()
    assert not result.converged.any()
    assert result.iterations.tolist() == [1, 1]


def test_differentiable_through_iterations() -> None:
    h = _hpd(2, 4, torch.complex128, seed=18).requires_grad_()
    b = torch.randn(2, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(19)).requires_grad_()

    def via_cg(h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        hs = (h + h.mH) / 2  # keep the perturbed matrix Hermitian
        return cg(MatrixOp(hs), b, tol=1e-14, max_iter=40).x

    assert torch.autograd.gradcheck(via_cg, (h, b))
    # and the gradient equals that of the direct solve
    weight = torch.randn(2, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(20))
    grads_cg = torch.autograd.grad((via_cg(h, b) * weight).real.sum(), (h, b))
    hs = (h + h.mH) / 2
    grads_solve = torch.autograd.grad((_solve(hs, b) * weight).real.sum(), (h, b))
    for got, want in zip(grads_cg, grads_solve):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_no_graph_without_grad() -> None:
    h = _hpd(2, 4, torch.complex128, seed=21)
    b = torch.randn(2, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(22))
    assert cg(MatrixOp(h), b).x.grad_fn is None


def test_bad_inputs() -> None:
    h = _hpd(2, 4, torch.float64, seed=23)
    b = torch.ones(2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="callable"):
        cg(h, b)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x0 must have the shape and dtype of b, \(2, 4\)"):
        cg(MatrixOp(h), b, x0=torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="tol"):
        cg(MatrixOp(h), b, tol=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        cg(MatrixOp(h), b, max_iter=-1)
    with pytest.raises(ValueError, match=r"operator must map shape \(2, 4\) to the same shape; got \(2, 3\)"):
        cg(lambda v: v[:, :3], b)
    with pytest.raises(ValueError, match="leading batch dimension"):
        cg(MatrixOp(h), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        cg(MatrixOp(h), torch.ones(2, 4, dtype=torch.long))
    bad = b.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"b must be finite; got 1 NaN or inf entries"):
        cg(MatrixOp(h), bad)
    with pytest.raises(ValueError, match=r"x0 must be finite"):
        cg(MatrixOp(h), b, x0=torch.full((2, 4), float("inf"), dtype=torch.float64))
    assert not torch.isfinite(cg(MatrixOp(h), bad, check_finite=False).x).all()
