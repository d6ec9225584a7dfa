"""Tests of ``solvers.nonlinear_fit``: forward against scipy, gradients, bounds, robustness.

The signal models are private stand-ins defined here (the simulation package has its own); they
keep ``times`` as a plain tensor attribute so that gradients with respect to it can be checked.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares
from torch import nn

from solvers.nonlinear_fit import nonlinear_fit

DT = torch.float64
BOUNDS = ((-2.0, -2.0, -1.0), (2.0, 2.0, 20.0))
TIMES = ((0.5, 1.0, 1.5, 2.0, 8.0), (0.3, 0.8, 1.2, 3.0, 6.0))


class SaturationRecovery(nn.Module):
    """``q(p) = (p0 + i p1)(1 − exp(−t p2))``, times (B, T) in seconds."""

    def __init__(self, times: torch.Tensor) -> None:
        super().__init__()
        self.times = times

    def decay(self, r1: torch.Tensor) -> torch.Tensor:
        return 1 - torch.exp(-self.times[:, :, None, None] * r1)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        f = self.decay(p[:, 2:3])
        return torch.complex(p[:, 0:1] * f, p[:, 1:2] * f)

    def numpy(self, b: int):
        t = self.times[b].detach().numpy()
        return lambda p: (p[0] + 1j * p[1]) * (1 - np.exp(-t * p[2]))


class InversionRecovery(SaturationRecovery):
    """``q(p) = (p0 + i p1)(1 − 2 exp(−t p2))``."""

    def decay(self, r1: torch.Tensor) -> torch.Tensor:
        return 1 - 2 * torch.exp(-self.times[:, :, None, None] * r1)

    def numpy(self, b: int):
        t = self.times[b].detach().numpy()
        return lambda p: (p[0] + 1j * p[1]) * (1 - 2 * np.exp(-t * p[2]))


class RealInversionRecovery(nn.Module):
    """Real-valued ``q(p) = p0 (1 − 2 exp(−t p1))`` (P = 2)."""

    def __init__(self, times: torch.Tensor) -> None:
        super().__init__()
        self.times = times

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return p[:, 0:1] * (1 - 2 * torch.exp(-self.times[:, :, None, None] * p[:, 1:2]))

    def numpy(self, b: int):
        t = self.times[b].detach().numpy()
        return lambda p: p[0] * (1 - 2 * np.exp(-t * p[1]))


MODELS = {"sr": SaturationRecovery, "ir": InversionRecovery, "ir-real": RealInversionRecovery}


def make_problem(model: str = "sr", ny: int = 3, nx: int = 3, seed: int = 0, dtype=DT) -> dict:
    gen = torch.Generator().manual_seed(seed)
    batch = 2
    times = torch.tensor(TIMES, dtype=dtype)
    q = MODELS[model](times)
    if model == "ir-real":
        p_true = torch.stack(
            [0.5 + torch.rand(batch, ny, nx, generator=gen, dtype=dtype), 0.3 + 1.5 * torch.rand(batch, ny, nx, generator=gen, dtype=dtype)], 1
        )
    else:
        m0 = 0.6 * torch.randn(batch, 2, ny, nx, generator=gen, dtype=dtype)
        r1 = 0.25 + 1.75 * torch.rand(batch, 1, ny, nx, generator=gen, dtype=dtype)
        p_true = torch.cat([m0, r1], 1)
    with torch.no_grad():
        clean = q(p_true)
    noise = torch.randn(clean.shape, generator=gen, dtype=dtype)
    if clean.is_complex():
        noise = torch.complex(noise, torch.randn(clean.shape, generator=gen, dtype=dtype))
    y = clean + 0.02 * noise
    p_reg = p_true + 0.1 * torch.randn(p_true.shape, generator=gen, dtype=dtype)
    return {"q": q, "y": y, "p_reg": p_reg, "p_true": p_true, "times": times}


def objective(q, y, p_reg, lam, p) -> torch.Tensor:
    """Per-pixel objective (B, Y, X) for a scalar λ."""
    r = q(p) - y
    r2 = torch.view_as_real(r).square().sum(-1) if r.is_complex() else r.square()
    return r2.sum(1) + lam * (p - p_reg).square().sum(1)


def scipy_fit(prob: dict, lam: float, bounds=None) -> torch.Tensor:
    """Per-pixel ``least_squares`` on the stacked residual ``[q(p) − y; √λ (p − p_reg)]``."""
    y, p_reg = prob["y"].numpy(), prob["p_reg"].numpy()
    out = np.zeros_like(p_reg)
    for b in range(p_reg.shape[0]):
        model = prob["q"].numpy(b)
        for iy in range(p_reg.shape[2]):
            for ix in range(p_reg.shape[3]):
                yy, pr = y[b, :, iy, ix], p_reg[b, :, iy, ix]

                def res(p):
                    r = model(p) - yy
                    parts = [r.real, r.imag] if np.iscomplexobj(r) else [r]
                    return np.concatenate(parts + [math.sqrt(lam) * (p - pr)])

                if bounds is None:
                    sol = least_squares(res, pr, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
                else:
                    x0 = np.clip(pr, np.asarray(bounds[0]) + 1e-3, np.asarray(bounds[1]) - 1e-3)
                    sol = least_squares(res, x0, bounds=bounds, method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15)
                out[b, :, iy, ix] = sol.x
    return torch.from_numpy(out)


# --------------------------------------------------------------------------- forward accuracy
@pytest.mark.parametrize("solver", ["lbfgs", "gauss-newton"])
@pytest.mark.parametrize("model", ["sr", "ir", "ir-real"])
@pytest.mark.parametrize("bounded", [False, True])
def test_forward_matches_scipy(solver: str, model: str, bounded: bool) -> None:
    prob = make_problem(model)
    lam = 0.05
    n_par = prob["p_reg"].shape[1]
    bounds = (BOUNDS[0][:n_par], BOUNDS[1][:n_par]) if bounded else None
    p, info = nonlinear_fit(
        prob["q"], prob["y"], prob["p_reg"], lam, bounds=bounds, solver=solver, tol=1e-12, max_iter=200,
        return_info=True,
    )
    assert info["converged"].all()
    ref = scipy_fit(prob, lam)  # the solutions are interior, so the unconstrained optimum is the answer
    if bounded:
        lo, up = (torch.tensor(v, dtype=DT).reshape(1, -1, 1, 1) for v in bounds)
        assert ((ref > lo + 0.05) & (ref < up - 0.05)).all()
    torch.testing.assert_close(p, ref, rtol=1e-6, atol=1e-8)


def test_active_bound_matches_bounded_least_squares() -> None:
    """An upper bound on R1 below every true R1: p approaches the bound from inside and agrees
    with scipy's bounded solution (the bound is active at every pixel)."""
    prob = make_problem("sr", ny=2, nx=2)
    with torch.no_grad():
        p_true = prob["p_true"].clone()
        p_true[:, 2] = 1.5 + 0.4 * torch.rand(p_true[:, 2].shape, generator=torch.Generator().manual_seed(1), dtype=DT)
        prob["y"] = prob["q"](p_true)
        prob["p_reg"][:, 2] = p_true[:, 2]
    bounds = ((-2.0, -2.0, 0.1), (2.0, 2.0, 1.0))
    lo, up = (torch.tensor(v, dtype=DT).reshape(1, -1, 1, 1) for v in bounds)
    ref = scipy_fit(prob, 0.01, bounds=bounds)
    assert ((ref[:, 2] - 1.0).abs() < 1e-9).all()
    for solver in ("lbfgs", "gauss-newton"):
        p = nonlinear_fit(prob["q"], prob["y"], prob["p_reg"], 0.01, bounds=bounds, solver=solver, tol=1e-12, max_iter=500)
        assert ((p > lo) & (p < up)).all()
        torch.testing.assert_close(p, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strictly_inside_bounds_when_saturated(dtype: torch.dtype) -> None:
    """The data ask for R1 far above the upper bound; p stays finite and strictly inside."""
    prob = make_problem("sr", ny=2, nx=2, dtype=dtype)
    with torch.no_grad():
        p_far = prob["p_true"].clone()
        p_far[:, 2] = 15.0
        y = prob["q"](p_far)
    bounds = ((-2.0, -2.0, 0.1), (2.0, 2.0, 2.0))
    for solver in ("lbfgs", "gauss-newton"):
        p = nonlinear_fit(prob["q"], y, prob["p_reg"], 0.0, bounds=bounds, solver=solver, max_iter=300)
        assert torch.isfinite(p).all()
        assert (p[:, 2] < 2.0).all() and (p[:, 2] > 1.99).all()


# --------------------------------------------------------------------------- gradients
def _fit_fn(solver: str, backward: str = "hessian", bounds=BOUNDS, model: str = "sr"):
    def fn(y, p_reg, lam, times):
        return nonlinear_fit(
            MODELS[model](times), y, p_reg, lam, bounds=bounds, solver=solver, backward=backward, tol=1e-13,
            max_iter=300,
        )

    return fn


@pytest.mark.parametrize("solver", ["lbfgs", "gauss-newton"])
def test_gradcheck_batch_lambda(solver: str) -> None:
    """y, p_reg, λ (B,) and the model's times. Finite differences of an iterative solver are
    limited by the noise of its converged solution (~1e-15 / eps 1e-6 = 1e-9): atol 1e-6 is
    comfortably above it, far below the size of the derivatives (~0.1-1)."""
    prob = make_problem("sr", ny=1, nx=2)
    inputs = (
        prob["y"].clone().requires_grad_(True),
        prob["p_reg"].clone().requires_grad_(True),
        torch.tensor([0.1, 0.3], dtype=DT, requires_grad=True),
        prob["times"].clone().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(_fit_fn(solver), inputs, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_gradcheck_full_jacobian_lambda_and_times() -> None:
    """Element-by-element (slow-mode) check of the derivatives to λ (B,) and the times."""
    prob = make_problem("sr", ny=1, nx=2, seed=4)
    fn = _fit_fn("gauss-newton")

    def partial(lam, times):
        return fn(prob["y"], prob["p_reg"], lam, times)

    inputs = (torch.tensor([0.1, 0.3], dtype=DT, requires_grad=True), prob["times"].clone().requires_grad_(True))
    assert torch.autograd.gradcheck(partial, inputs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("lam_shape", [(), (2, 1, 1, 2)])
def test_gradcheck_scalar_and_map_lambda(lam_shape: tuple) -> None:
    prob = make_problem("ir", ny=1, nx=2, seed=3)
    lam = torch.full(lam_shape, 0.2, dtype=DT)
    if lam_shape:
        lam[0, 0, 0, 1] = 0.05
    inputs = (
        prob["y"].clone().requires_grad_(True),
        prob["p_reg"].clone().requires_grad_(True),
        lam.requires_grad_(True),
        prob["times"].clone().requires_grad_(True),
    )
    fn = _fit_fn("lbfgs", bounds=None, model="ir")
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("solver", ["lbfgs", "gauss-newton"])
def test_backward_modes_agree(solver: str) -> None:
    """Exact-Hessian, HVP-CG and unrolled-through-a-converged-solve derivatives coincide."""
    prob = make_problem("sr", ny=2, nx=2, seed=1)
    grads = {}
    infos = {}
    v = torch.randn(prob["p_reg"].shape, generator=torch.Generator().manual_seed(5), dtype=DT)
    for mode in ("hessian", "hvp-cg", "unrolled"):
        inputs = (
            prob["y"].clone().requires_grad_(True),
            prob["p_reg"].clone().requires_grad_(True),
            torch.tensor([0.1, 0.3], dtype=DT, requires_grad=True),
            prob["times"].clone().requires_grad_(True),
        )
        p, infos[mode] = nonlinear_fit(
            SaturationRecovery(inputs[3]), *inputs[:3], bounds=BOUNDS, solver=solver,
            backward="hessian" if mode == "unrolled" else mode, implicit=mode != "unrolled", tol=1e-13,
            max_iter=300, return_info=True,
        )
        grads[mode] = torch.autograd.grad((p * v).sum(), inputs)
    for mode in ("hvp-cg", "unrolled"):
        for a, b in zip(grads[mode], grads["hessian"]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert infos["hvp-cg"].backward_cg is not None and infos["hvp-cg"].backward_cg.converged.all()
    assert infos["hessian"]["hessian_fallback_count"] == 0


def test_float32_defaults_and_inference_mode() -> None:
    """Single precision with the default tolerances converges and agrees with float64."""
    prob64 = make_problem("sr", ny=3, nx=3)
    prob32 = make_problem("sr", ny=3, nx=3, dtype=torch.float32)
    y32 = prob64["y"].to(torch.complex64)
    p32, info = nonlinear_fit(prob32["q"], y32, prob64["p_reg"].float(), 0.1, bounds=BOUNDS, return_info=True)
    p64 = nonlinear_fit(prob64["q"], prob64["y"], prob64["p_reg"], 0.1, bounds=BOUNDS)
    assert p32.dtype == torch.float32 and info["converged"].all()
    torch.testing.assert_close(p32.double(), p64, rtol=0, atol=1e-4)
    with torch.inference_mode():
        p_inf = nonlinear_fit(prob32["q"], y32.clone(), prob64["p_reg"].float(), 0.1, bounds=BOUNDS)
    torch.testing.assert_close(p_inf, p32)


def test_no_graph_without_grad() -> None:
    prob = make_problem("sr", ny=2, nx=2)
    p, info = nonlinear_fit(prob["q"], prob["y"], prob["p_reg"], 0.1, return_info=True)
    assert not p.requires_grad and "hessian_fallback" not in info
    y = prob["y"].clone().requires_grad_(True)
    with torch.no_grad():
        assert not nonlinear_fit(prob["q"], y, prob["p_reg"], 0.1).requires_grad


# --------------------------------------------------------------------------- per-pixel behaviour
def test_pixels_converge_independently() -> None:
    prob = make_problem("sr", ny=2, nx=3, seed=2)
    q, lam = prob["q"], 0.1
    y, p_reg = prob["y"].clone(), prob["p_reg"].clone()
    # Pixel (0, 0, 0): noise-free data, prior at the truth -> the start is already optimal.
    p_reg[0, :, 0, 0] = prob["p_true"][0, :, 0, 0]
    with torch.no_grad():
        y[0, :, 0, 0] = q(prob["p_true"])[0, :, 0, 0]
    for solver in ("lbfgs", "gauss-newton"):
        p, info = nonlinear_fit(q, y, p_reg, lam, bounds=BOUNDS, solver=solver, tol=1e-10, return_info=True)
        assert info["iterations"].shape == (2, 2, 3)
        assert info["iterations"][0, 0, 0] == 0
        assert info["iterations"].max() >= 4
        assert info["converged"].all()
        # A pixel's answer does not depend on the other pixels.
        p_single = nonlinear_fit(
            q, y[:, :, 1:2, 2:3], p_reg[:, :, 1:2, 2:3], lam, bounds=BOUNDS, solver=solver, tol=1e-10
        )
        torch.testing.assert_close(p_single, p[:, :, 1:2, 2:3], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("solver", ["lbfgs", "gauss-newton"])
def test_warm_start_at_solution_returns_immediately(solver: str) -> None:
    prob = make_problem("ir", ny=2, nx=2)
    args = (prob["q"], prob["y"], prob["p_reg"], 0.1)
    p1 = nonlinear_fit(*args, bounds=BOUNDS, solver=solver, tol=1e-9, max_iter=200)
    p2, info = nonlinear_fit(*args, p0=p1, bounds=BOUNDS, solver=solver, tol=1e-9, return_info=True)
    assert int(info["iterations"].max()) == 0
    assert info["evaluations"] == 1
    torch.testing.assert_close(p2, p1, rtol=1e-12, atol=1e-12)


def test_singular_hessian_gets_counted_damping(caplog: pytest.LogCaptureFixture) -> None:
    """y = 0, λ = 0 and M0 = 0 at one pixel: R1 is a flat direction, the Hessian singular."""
    prob = make_problem("sr", ny=2, nx=2)
    y = prob["y"].clone()
    p0 = prob["p_reg"].clone()
    lam = torch.full((2, 1, 2, 2), 0.1, dtype=DT)
    y[1, :, 0, 1] = 0
    p0[1, :2, 0, 1] = 0
    lam[1, 0, 0, 1] = 0
    y.requires_grad_(True)
    lam.requires_grad_(True)
    p_reg = prob["p_reg"].clone().requires_grad_(True)
    with caplog.at_level(logging.INFO, logger="solvers"):
        p, info = nonlinear_fit(prob["q"], y, p_reg, lam, p0=p0, bounds=BOUNDS, return_info=True)
    assert info["hessian_fallback_count"] == 1
    expected = torch.zeros(2, 2, 2, dtype=torch.bool)
    expected[1, 0, 1] = True
    assert torch.equal(info["hessian_fallback"], expected)
    assert any("singular" in r.getMessage() for r in caplog.records if r.name.startswith("solvers."))
    grads = torch.autograd.grad(p.sum(), (y, p_reg, lam))
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p[1, 2, 0, 1], p0[1, 2, 0, 1], rtol=1e-12, atol=0)  # flat: stays put


def test_never_nan_on_hard_pixels() -> None:
    """Zero Jacobian, overflowing model at the start, huge data: finite output, status reported."""
    prob = make_problem("sr", ny=2, nx=2)
    y, p0 = prob["y"].clone(), prob["p_reg"].clone()
    y[0, :, 0, 0] = 1e3  # far from anything the model can produce
    p0[0, :, 1, 1] = torch.tensor([0.0, 0.0, 0.7], dtype=DT)  # M0 = 0: zero Jacobian in R1
    p0[1, :, 1, 0] = torch.tensor([0.5, 0.5, -200.0], dtype=DT)  # exp(+1600) overflows: F = inf
    for solver in ("lbfgs", "gauss-newton"):
        p, info = nonlinear_fit(prob["q"], y, prob["p_reg"], 0.0, p0=p0, solver=solver, max_iter=100, return_info=True)
        assert torch.isfinite(p).all()
        assert info["status"][1, 1, 0] == 4  # non-finite start: left where it was
        torch.testing.assert_close(p[1, :, 1, 0], p0[1, :, 1, 0])


# --------------------------------------------------------------------------- validation
def _valid() -> dict:
    prob = make_problem("sr", ny=2, nx=2)
    return {"q": prob["q"], "y": prob["y"], "p_reg": prob["p_reg"], "lam": 0.1}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda a: a.update(y=a["y"][:1]), ValueError, r"y must have shape .*\(2, 2, 2\).*got \(1, 5, 2, 2\)"),
        (lambda a: a.update(y=a["y"][..., :1]), ValueError, r"y must have shape .*got \(2, 5, 2, 1\)"),
        (lambda a: a.update(y=a["y"][0]), ValueError, r"y must have shape \(B, T, Y, X\); got shape \(5, 2, 2\)"),
        (lambda a: a.update(bounds=((0.0, 0.0), (1.0, 1.0))), ValueError, r"P = 3 .*got 2"),
        (lambda a: a.update(lam=-0.1), ValueError, r"lam must be finite and >= 0"),
        (lambda a: a.update(lam=torch.tensor([0.1, -1.0], dtype=DT)), ValueError, r">= 0"),
        (lambda a: a.update(lam=torch.ones(3, dtype=DT)), ValueError, r"B = 2; got shape \(3,\)"),
        (lambda a: a.update(lam=torch.ones(2, 2, 2, 2, dtype=DT)), ValueError, r"\(2, 3, 2, 2\); got shape \(2, 2, 2, 2\)"),
        (lambda a: a.update(y=a["y"].clone().index_fill_(1, torch.tensor([0]), math.nan)), ValueError, "y must be finite"),
        (lambda a: a.update(p_reg=a["p_reg"].clone().index_fill_(1, torch.tensor([0]), math.inf)), ValueError, "p_reg must be finite"),
        (lambda a: a.update(p_reg=a["p_reg"].float()), ValueError, "precision"),
        (lambda a: a.update(lam=math.nan), ValueError, "lam must be finite"),
        (lambda a: a.update(lam=torch.full((2,), math.inf, dtype=DT)), ValueError, "lam must be finite"),
        (lambda a: a.update(p0=torch.full_like(a["p_reg"], math.nan)), ValueError, "p0 must be finite"),
        (lambda a: a.update(solver="newton"), ValueError, "solver must be one of"),
        (lambda a: a.update(backward="cg"), ValueError, "backward must be one of"),
        (lambda a: a.update(p0=a["p_reg"][:, :2]), ValueError, r"p0 must have the shape"),
        (lambda a: a.update(q=lambda p: p), ValueError, r"q\(p\) must return a tensor of the shape of y"),
        (lambda a: a.update(lam="0.1"), TypeError, "lam must be"),
        (lambda a: a.update(max_iter=-1), ValueError, "max_iter"),
    ],
)
def test_bad_input(change, error: type, match: str) -> None:
    args = _valid()
    change(args)
    with pytest.raises(error, match=match):
        nonlinear_fit(**args)


def test_objective_decreases_and_info_consistent() -> None:
    prob = make_problem("ir-real", ny=3, nx=2)
    lam = 0.2
    p, info = nonlinear_fit(prob["q"], prob["y"], prob["p_reg"], lam, solver="gauss-newton", return_info=True)
    start = objective(prob["q"], prob["y"], prob["p_reg"], lam, prob["p_reg"])
    final = objective(prob["q"], prob["y"], prob["p_reg"], lam, p)
    assert (final < start).all()
    torch.testing.assert_close(info["objective"], final, rtol=1e-10, atol=1e-14)
