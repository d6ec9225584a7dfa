"""data_consistency: forward = dense solve, implicit gradients (gradcheck) to k, yᵢ, λᵢ and the
operator's tensors, implicit = unrolled, non-convergence logging, input validation.

A per-sample dense-matrix operator defined here exercises the layer independently of the MRI
operators; the same checks then run on MultiCoilCartesianOp and MultiCoilNUFFTOp."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.autograd import gradcheck

from operators.linear_operator import LinearOperator
from solvers.cg import cg
from solvers.data_consistency import data_consistency, operator_tensors
from tests.helpers import dense_matrix, random_complex, tiny_cartesian_problem

C128 = torch.complex128
F64 = torch.float64


@pytest.fixture(autouse=True)
def _single_thread():  # type: ignore[no-untyped-def]
    """8x8 problems only lose from intra-op threading (and a shared CI core); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class DenseOp(LinearOperator):
    """x (B, N) -> M x with a per-sample matrix M (B, K, N)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.matrix @ x.unsqueeze(-1)).squeeze(-1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (self.matrix.mH @ y.unsqueeze(-1)).squeeze(-1)


def _randn(*shape: int, seed: int, dtype: torch.dtype = C128) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _dense_problem(seed: int = 0, batch: int = 2, m: int = 5, n: int = 4) -> dict[str, torch.Tensor]:
    return {
        "matrix": _randn(batch, m, n, seed=seed),
        "k": _randn(batch, m, seed=seed + 1),
        "y1": _randn(batch, n, seed=seed + 2),
        "lam1": torch.tensor([0.3, 0.8], dtype=F64),
        "y2": _randn(batch, n, seed=seed + 3),
        "lam2": torch.tensor(0.2, dtype=F64),
    }


def _reference(matrix, k, regs):  # type: ignore[no-untyped-def]
    """Dense solve of (MᴴM + Σλ) y = Mᴴk + Σλ yᵢ, any leading batch of matrices."""
    n = matrix.shape[-1]
    h = matrix.mH @ matrix
    rhs = (matrix.mH @ k.unsqueeze(-1)).squeeze(-1)
    for lam, target in regs:
        lam = torch.as_tensor(lam, dtype=F64)
        lam_b = lam.reshape(-1, 1) if lam.ndim == 1 else lam
        h = h + lam_b.unsqueeze(-1) * torch.eye(n, dtype=matrix.dtype)
        rhs = rhs + lam_b * target
    return torch.linalg.solve(h, rhs)


def test_forward_matches_dense_solve_and_is_the_cg_solution() -> None:
    p = _dense_problem()
    regs = [(p["lam1"], p["y1"]), (p["lam2"], p["y2"]), (0.5, p["y1"])]
    y, info = data_consistency(DenseOp(p["matrix"]), p["k"], regs, tol=1e-12, return_info=True)
    torch.testing.assert_close(y, _reference(p["matrix"], p["k"], regs), rtol=1e-10, atol=1e-11)
    assert torch.equal(y, info.forward.x) and info.forward.converged.all() and info.backward is None


def test_gradcheck_dense_operator_all_inputs() -> None:
    p = {name: t.clone().requires_grad_() for name, t in _dense_problem(seed=10).items()}
    for implicit in (True, False):

        def layer(matrix, k, y1, lam1, y2, lam2):  # type: ignore[no-untyped-def]
            regs = [(lam1, y1), (lam2, y2)]
            return data_consistency(DenseOp(matrix), k, regs, tol=1e-13, max_iter=60, implicit=implicit)

        assert gradcheck(layer, tuple(p.values()), fast_mode=not implicit)


def test_implicit_gradients_equal_unrolled_and_dense() -> None:
    p = {name: t.clone().requires_grad_() for name, t in _dense_problem(seed=20).items()}
    weight = _randn(2, 4, seed=25)
    names = list(p)

    def grads(kind: str) -> tuple[torch.Tensor, ...]:
        regs = [(p["lam1"], p["y1"]), (p["lam2"], p["y2"])]
        if kind == "dense":
            y = _reference(p["matrix"], p["k"], regs)
        else:
            y = data_consistency(DenseOp(p["matrix"]), p["k"], regs, tol=1e-13, implicit=kind == "implicit")
        return torch.autograd.grad((y * weight.conj()).real.sum(), [p[n] for n in names])

    implicit, unrolled, dense = grads("implicit"), grads("unrolled"), grads("dense")
    for name, gi, gu, gd in zip(names, implicit, unrolled, dense):
        torch.testing.assert_close(gi, gu, rtol=1e-8, atol=1e-10, msg=name)
        torch.testing.assert_close(gi, gd, rtol=1e-8, atol=1e-10, msg=name)
        assert gi.shape == p[name].shape and gi.dtype == p[name].dtype


def test_backward_info_and_zero_gradient_without_nan() -> None:
    p = {name: t.clone().requires_grad_() for name, t in _dense_problem(seed=30).items()}
    regs = [(p["lam1"], p["y1"]), (p["lam2"], p["y2"])]
    y, info = data_consistency(DenseOp(p["matrix"]), p["k"], regs, tol=1e-10, return_info=True)
    y.backward(torch.zeros_like(y))
    assert info.backward is not None and info.backward.iterations.tolist() == [0, 0]
    for name, t in p.items():
        assert t.grad is not None and torch.equal(t.grad, torch.zeros_like(t)), name


def test_non_convergence_is_logged_and_finite(caplog: pytest.LogCaptureFixture) -> None:
    p = {name: t.clone().requires_grad_() for name, t in _dense_problem(seed=40).items()}
    regs = [(p["lam1"], p["y1"]), (p["lam2"], p["y2"])]
    with caplog.at_level(logging.WARNING, logger="solvers"):
        y, info = data_consistency(DenseOp(p["matrix"]), p["k"], regs, tol=1e-12, max_iter=1, return_info=True)
        assert any("forward: CG did not reach tol" in r.getMessage() for r in caplog.records)
        assert info.forward.iterations.tolist() == [1, 1] and not info.forward.converged.any()
        y.abs().sum().backward()
        assert any("backward: CG did not reach tol" in r.getMessage() for r in caplog.records)
    assert torch.isfinite(torch.view_as_real(y)).all()
    for t in p.values():
        assert torch.isfinite(torch.view_as_real(t.grad) if t.is_complex() else t.grad).all()


def test_backward_tolerance_is_separate() -> None:
    p = {name: t.clone().requires_grad_() for name, t in _dense_problem(seed=50, m=20, n=40).items()}
    regs = [(p["lam1"] * 0.1, p["y1"])]
    y, info = data_consistency(
        DenseOp(p["matrix"]), p["k"], regs, tol=1e-12, backward_tol=1e-2, backward_max_iter=50, return_info=True
    )
    y.abs().sum().backward()
    assert info.backward is not None and info.backward.converged.all()
    assert info.backward.iterations.max() < info.forward.iterations.max()


def test_without_grad_no_graph_and_same_value() -> None:
    p = _dense_problem(seed=60)
    regs = [(p["lam1"], p["y1"])]
    plain = data_consistency(DenseOp(p["matrix"]), p["k"], regs, tol=1e-12)
    assert plain.grad_fn is None
    k = p["k"].clone().requires_grad_()
    tracked = data_consistency(DenseOp(p["matrix"]), k, regs, tol=1e-12)
    assert tracked.grad_fn is not None and torch.equal(tracked.detach(), plain)
    unrolled = data_consistency(DenseOp(p["matrix"]), p["k"], regs, tol=1e-12, implicit=False)
    torch.testing.assert_close(unrolled, plain, rtol=1e-10, atol=1e-11)


def test_no_regularisation_and_warm_start() -> None:
    p = _dense_problem(seed=70, m=6, n=4)  # tall: MᴴM positive definite
    y = data_consistency(DenseOp(p["matrix"]), p["k"], [], tol=1e-12)
    torch.testing.assert_close(y, _reference(p["matrix"], p["k"], []), rtol=1e-9, atol=1e-10)
    _, info = data_consistency(DenseOp(p["matrix"]), p["k"], [], x0=y, tol=1e-8, return_info=True)
    assert info.forward.iterations.tolist() == [0, 0]


def test_operator_tensors_finds_nested_tensors() -> None:
    a = torch.ones(2, 3, 3, dtype=C128, requires_grad=True)
    b = torch.ones(2, 3, 3, dtype=C128, requires_grad=True)
    fixed = torch.ones(2, 3, 3, dtype=C128)
    op = DenseOp(a) @ DenseOp(fixed)
    op.extra = [b, b]  # type: ignore[attr-defined]
    found = operator_tensors(op.H + DenseOp(a))
    assert {id(t) for t in found} == {id(a), id(b)} and len(found) == 2


def test_bad_inputs_name_expected_and_got() -> None:
    p = _dense_problem(seed=80)
    op, k, y1 = DenseOp(p["matrix"]), p["k"], p["y1"]
    with pytest.raises(ValueError, match=r"λ must be finite and >= 0; got -0.5"):
        data_consistency(op, k, [(-0.5, y1)])
    with pytest.raises(ValueError, match=r"λ must be finite and >= 0"):
        data_consistency(op, k, [(torch.tensor([0.1, -0.1], dtype=F64), y1)])
    with pytest.raises(ValueError, match=r"scalar or have shape \(B,\) = \(2,\); got shape \(3,\)"):
        data_consistency(op, k, [(torch.ones(3, dtype=F64), y1)])
    with pytest.raises(ValueError, match=r"y_reg must have the solution's shape and dtype \(2, 4\).*got \(2, 5\)"):
        data_consistency(op, k, [(0.1, torch.zeros(2, 5, dtype=C128))])
    with pytest.raises(ValueError, match=r"got \(2, 4\) torch.complex64"):
        data_consistency(op, k, [(0.1, y1.to(torch.complex64))])
    bad = y1.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"regs\[0\] y_reg must be finite"):
        data_consistency(op, k, [(0.1, bad)])
    bad_k = k.clone()
    bad_k[1, 2] = float("inf")
    with pytest.raises(ValueError, match="k must be finite"):
        data_consistency(op, bad_k, [(0.1, y1)])
    with pytest.raises(ValueError, match=r"k of shape \(2, 7\) does not fit the operator DenseOp"):
        data_consistency(op, torch.zeros(2, 7, dtype=C128), [(0.1, y1)])
    with pytest.raises(TypeError, match=r"regs\[0\] must be a pair"):
        data_consistency(op, k, [(0.1, y1, y1)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="regs must be a sequence"):
        data_consistency(op, k, y1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="A must be a LinearOperator"):
        data_consistency(p["matrix"], k, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x0 must have the solution's shape"):
        data_consistency(op, k, [(0.1, y1)], x0=torch.zeros(2, 3, dtype=C128))
    with pytest.raises(ValueError, match=r"x0 must be finite"):
        data_consistency(op, k, [(0.1, y1)], x0=torch.full_like(y1, float("nan")))
    with pytest.raises(ValueError, match=r"λ must be finite"):
        data_consistency(op, k, [(float("inf"), y1)])
    with pytest.raises(ValueError, match="backward_tol"):
        data_consistency(op, k, [(0.1, y1)], backward_tol=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        data_consistency(op, k, [(0.1, y1)], max_iter=2.5)  # type: ignore[arg-type]


def test_cg_is_reused_not_reimplemented() -> None:
    p = _dense_problem(seed=90)
    op = DenseOp(p["matrix"])
    y = data_consistency(op, p["k"], [(p["lam2"], p["y2"])], tol=1e-9, max_iter=3)
    rhs = op.H(p["k"]) + p["lam2"] * p["y2"]
    expected = cg(lambda v: op.gram(v) + p["lam2"] * v, rhs, tol=1e-9, max_iter=3).x
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- MRI operators
B, T, C, N = 2, 2, 3, 8


def _radial(n_spokes: int = 3, n_readout: int = 8) -> torch.Tensor:
    """Small radial trajectory (T, 2, K) in [-π, π), spokes rotated between contrasts."""
    radius = torch.linspace(-torch.pi, torch.pi, n_readout + 1, dtype=F64)[:-1]
    trajs = []
    for t in range(T):
        angle = (torch.arange(n_spokes, dtype=F64) + t / T) * torch.pi / n_spokes
        ky = torch.sin(angle)[:, None] * radius
        kx = torch.cos(angle)[:, None] * radius
        trajs.append(torch.stack([ky.reshape(-1), kx.reshape(-1)]))
    return torch.stack(trajs)


def _mri_problem(kind: str, seed: int, density: bool = False) -> dict[str, object]:
    """Tiny problem (B=2, T=2, C=3, 8x8, complex128): operator factory ``make(csm, density)``,
    coil maps, data ``k = A x + noise``, two regularisers (λ₁ per sample, λ₂ scalar)."""
    from operators import MultiCoilCartesianOp, MultiCoilNUFFTOp

    tiny = tiny_cartesian_problem(B=B, T=T, C=C, Y=N, X=N, dtype=C128, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "cartesian":

        def make(csm: torch.Tensor, dens: torch.Tensor | None = None) -> LinearOperator:
            return MultiCoilCartesianOp(csm, tiny.mask)

    else:
        traj = _radial()
        shared = MultiCoilNUFFTOp(tiny.csm, traj).nufft

        def make(csm: torch.Tensor, dens: torch.Tensor | None = None) -> LinearOperator:
            op = MultiCoilNUFFTOp(csm, traj, density=dens)
            if dens is None:  # reuse the NUFFT and its cached Toeplitz kernel: keeps the test fast
                op.nufft = shared
            return op

    dens = 0.5 + torch.rand(B, T, 3 * 8, dtype=F64, generator=g) if density else None
    with torch.no_grad():
        clean = make(tiny.csm, dens)(tiny.x)
        k = clean + 0.1 * random_complex(clean.shape, g, C128)
    return {
        "make": make,
        "csm": tiny.csm,
        "density": dens,
        "k": k,
        "y1": random_complex((B, T, N, N), g, C128),
        "lam1": torch.tensor([0.2, 0.5], dtype=F64),
        "y2": random_complex((B, T, N, N), g, C128),
        "lam2": torch.tensor(0.1, dtype=F64),
    }


@pytest.mark.parametrize("kind", ["cartesian", "nufft"])
def test_mri_forward_matches_dense_solve(kind: str) -> None:
    p = _mri_problem(kind, seed=100)
    op = p["make"](p["csm"])
    regs = [(p["lam1"], p["y1"]), (p["lam2"], p["y2"])]
    y, info = data_consistency(op, p["k"], regs, tol=1e-12, max_iter=300, return_info=True)
    assert info.forward.converged.all()
    shape = (B, T, N, N)
    if kind == "cartesian":  # exact gram: dense AᴴA from the dense A of the whole batch
        a = dense_matrix(op, shape)
        normal = a.mH @ a
        torch.testing.assert_close(dense_matrix(op.gram, shape), normal, rtol=1e-10, atol=1e-12)
    else:  # the layer uses the Toeplitz gram (~1e-5 from AᴴA by interpolation): solve with it
        normal = dense_matrix(op.gram, shape)
    lam = (p["lam1"].reshape(B, 1, 1, 1) + p["lam2"]).expand(shape).reshape(-1)
    rhs = op.H(p["k"]) + p["lam1"].reshape(B, 1, 1, 1) * p["y1"] + p["lam2"] * p["y2"]
    expected = torch.linalg.solve(normal + torch.diag(lam.to(C128)), rhs.reshape(-1)).reshape(shape)
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ["cartesian", "nufft"])
def test_mri_gradcheck_k_regs_lambdas_csm(kind: str) -> None:
    p = _mri_problem(kind, seed=200)
    names = ["csm", "k", "y1", "lam1", "y2", "lam2"]
    inputs = tuple(p[n].clone().requires_grad_() for n in names)  # type: ignore[union-attr]

    def layer(csm, k, y1, lam1, y2, lam2):  # type: ignore[no-untyped-def]
        return data_consistency(p["make"](csm), k, [(lam1, y1), (lam2, y2)], tol=1e-12, max_iter=300)

    assert gradcheck(layer, inputs, fast_mode=True)
    # every input really receives a non-zero gradient (no silently dropped path)
    out = layer(*inputs)
    grads = torch.autograd.grad((out * _randn(*out.shape, seed=7).conj()).real.sum(), inputs)
    for name, grad in zip(names, grads):
        assert grad.abs().max() > 1e-6, name


def test_nufft_gradcheck_density() -> None:
    p = _mri_problem("nufft", seed=300, density=True)
    dens = p["density"].clone().requires_grad_()  # type: ignore[union-attr]

    def layer(dens):  # type: ignore[no-untyped-def]
        op = p["make"](p["csm"], dens)
        return data_consistency(op, p["k"], [(p["lam1"], p["y1"])], tol=1e-12, max_iter=300)

    assert gradcheck(layer, (dens,), fast_mode=True)
    grad = torch.autograd.grad(layer(dens).abs().sum(), dens)[0]
    assert grad.abs().min() > 0


@pytest.mark.parametrize("kind", ["cartesian", "nufft"])
def test_mri_implicit_equals_unrolled(kind: str) -> None:
    """Unrolled gradients are those of the truncated algorithm: the derivative of the CG iterates
    converges later than the iterates, so the unrolled run is forced well past convergence."""
    p = _mri_problem(kind, seed=400)
    names = ["csm", "k", "y1", "lam1", "y2", "lam2"]
    weight = _randn(B, T, N, N, seed=8)
    results = []
    for implicit in (True, False):
        inputs = [p[n].clone().requires_grad_() for n in names]  # type: ignore[union-attr]
        csm, k, y1, lam1, y2, lam2 = inputs
        y = data_consistency(p["make"](csm), k, [(lam1, y1), (lam2, y2)], tol=1e-12 if implicit else 0.0,
                             max_iter=300 if implicit else 150, implicit=implicit)
        results.append((y.detach(), torch.autograd.grad((y * weight.conj()).real.sum(), inputs)))
    (y_i, g_i), (y_u, g_u) = results
    torch.testing.assert_close(y_i, y_u, rtol=1e-9, atol=1e-10)
    for name, a, b in zip(names, g_i, g_u):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=name)


def test_fixed_iteration_count_is_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    p = _dense_problem(seed=95, m=20, n=40)
    with caplog.at_level(logging.WARNING, logger="solvers"):
        _, info = data_consistency(DenseOp(p["matrix"]), p["k"], [(0.01, p["y1"])], tol=0.0, max_iter=3,
                                   return_info=True)
    assert info.forward.iterations.tolist() == [3, 3]
    assert not caplog.records
