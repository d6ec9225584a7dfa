"""NUFFTOp and MultiCoilNUFFTOp: exactness against the DFT, adjointness, Toeplitz gram, autograd,
input validation; each on both backends (finufft and the Kaiser-Bessel gridding)."""

from __future__ import annotations

import math

import pytest
import torch

from operators.fft import centered_fft
from operators.nufft import MultiCoilNUFFTOp, NUFFTOp
from operators.sampling import radial_trajectory, ramp_density
from tests.helpers import assert_adjoint, assert_gram, random_complex

DTYPES = [pytest.param(torch.complex64, 1e-4, id="complex64"),
          pytest.param(torch.complex128, 1e-10, id="complex128")]
BACKENDS = ["finufft", "gridding"]
# Relative error bound against the exact DFT per (backend, dtype): finufft runs at eps 1e-6
# (complex64) / 1e-12 (complex128); the gridding (6 neighbours, 2x grid) is accurate to ~1e-5.
DFT_TOL = {("finufft", torch.complex64): 1e-5, ("finufft", torch.complex128): 1e-10,
           ("gridding", torch.complex64): 1e-4, ("gridding", torch.complex128): 1e-4}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _real(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.complex128 else torch.float32


def _random_trajectory(shape: tuple[int, ...], k: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    """Uniform random ``(*shape, 2, K)`` trajectory in [-π, π): every (b, t) differs."""
    uniform = torch.rand(*shape, 2, k, generator=_gen(seed), dtype=torch.float64)
    return ((2 * uniform - 1) * math.pi).to(dtype)


def _random_density(shape: tuple[int, ...], k: int, dtype: torch.dtype, seed: int = 2) -> torch.Tensor:
    return (0.2 + torch.rand(*shape, k, generator=_gen(seed), dtype=torch.float64)).to(dtype)


def _exact_matrix(trajectory: torch.Tensor, im_size: tuple[int, int]) -> torch.Tensor:
    """Exact non-uniform DFT ``(K, Y·X)`` of one trajectory ``(2, K)``, centred and orthonormal."""
    ny, nx = im_size
    py = torch.arange(ny, dtype=torch.float64) - ny // 2
    px = torch.arange(nx, dtype=torch.float64) - nx // 2
    om = trajectory.to(torch.float64)
    arg = om[0, :, None, None] * py[None, :, None] + om[1, :, None, None] * px[None, None, :]
    return (torch.exp(-1j * arg) / math.sqrt(ny * nx)).reshape(om.shape[-1], ny * nx)


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("im_size", [(8, 8), (7, 10), (32, 24)])
def test_nufft_and_adjoint_match_exact_dft(im_size: tuple[int, int], backend: str, dtype: torch.dtype) -> None:
    """Forward and adjoint against the exact centred, orthonormal non-uniform DFT (catches any
    sign, scale, centring or axis-order mistake: those give errors of order 1)."""
    traj = _random_trajectory((2,), 300, torch.float64)
    x = random_complex((2, 1, *im_size), _gen(3), torch.complex128)
    y = random_complex((2, 1, 300), _gen(4), torch.complex128)
    op = NUFFTOp(traj.to(_real(dtype)), im_size, backend=backend)
    got, got_adj = op(x.to(dtype)), op.H(y.to(dtype))  # (T=2, C=1, K), (T=2, C=1, Y, X)
    tol = DFT_TOL[(backend, dtype)]
    for t in range(2):
        e = _exact_matrix(traj[t].to(_real(dtype)), im_size)
        for name, have, want in [("forward", got[t, 0], e @ x[t, 0].reshape(-1)),
                                 ("adjoint", got_adj[t, 0].reshape(-1), e.mH @ y[t, 0])]:
            err = torch.linalg.vector_norm(have - want) / torch.linalg.vector_norm(want)
            assert err < tol, f"{name}, contrast {t}: relative error {float(err):.2e} > {tol:g}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("im_size", [(8, 8), (9, 6)])
def test_nufft_on_grid_points_equals_centred_fft(im_size: tuple[int, int], backend: str) -> None:
    ny, nx = im_size
    ky = 2 * math.pi * (torch.arange(ny) - ny // 2) / ny
    kx = 2 * math.pi * (torch.arange(nx) - nx // 2) / nx
    grid_y, grid_x = torch.meshgrid(ky, kx, indexing="ij")
    traj = torch.stack([grid_y.reshape(-1), grid_x.reshape(-1)]).to(torch.float64)[None]  # (1, 2, YX)
    x = random_complex((1, 1, ny, nx), _gen(4), torch.complex128)
    got = NUFFTOp(traj, im_size, backend=backend)(x).reshape(ny, nx)
    want = centered_fft(x[0, 0])
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))


# ------------------------------------------------------------------------------ adjointness
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, rtol", DTYPES)
@pytest.mark.parametrize("with_density", [False, True], ids=["plain", "density"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-sample-traj", "shared-traj"])
def test_nufft_adjoint(dtype: torch.dtype, rtol: float, with_density: bool, shared: bool, backend: str) -> None:
    b, t, c, k, im = 2, 3, 2, 40, (8, 10)
    traj = _random_trajectory((t,) if shared else (b, t), k, _real(dtype))
    density = _random_density((b, t), k, _real(dtype)) if with_density else None
    op = NUFFTOp(traj, im, density=density, backend=backend)
    x = random_complex((b, t, c, *im), _gen(5), dtype)
    y = random_complex((b, t, c, k), _gen(6), dtype)
    assert_adjoint(op, x, y, rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, rtol", DTYPES)
def test_multicoil_nufft_adjoint_with_density(dtype: torch.dtype, rtol: float, backend: str) -> None:
    b, t, c, k, im = 2, 3, 4, 40, (8, 8)
    csm = random_complex((b, c, *im), _gen(7), dtype)
    op = MultiCoilNUFFTOp(csm, _random_trajectory((b, t), k, _real(dtype)),
                          density=_random_density((t,), k, _real(dtype)), backend=backend)
    x = random_complex((b, t, *im), _gen(8), dtype)
    y = random_complex((b, t, c, k), _gen(9), dtype)
    assert_adjoint(op, x, y, rtol)
    assert_adjoint(op.H, y, x, rtol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vjp_of_forward_is_the_adjoint(backend: str) -> None:
    b, t, c, k, im = 1, 2, 3, 30, (8, 8)
    csm = random_complex((b, c, *im), _gen(10), torch.complex128)
    op = MultiCoilNUFFTOp(csm, _random_trajectory((b, t), k, torch.float64),
                          density=_random_density((b, t), k, torch.float64), backend=backend)
    x = random_complex((b, t, *im), _gen(11), torch.complex128).requires_grad_(True)
    y = random_complex((b, t, c, k), _gen(12), torch.complex128)
    (vjp,) = torch.autograd.grad(op(x), x, grad_outputs=y)
    assert torch.allclose(vjp, op.H(y), rtol=0, atol=1e-12 * float(vjp.abs().max()))


# ------------------------------------------------------------------------------ Toeplitz gram
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("with_density", [False, True], ids=["plain", "density"])
def test_toeplitz_gram_matches_adjoint_forward(dtype: torch.dtype, with_density: bool, backend: str) -> None:
    b, t, c, k, im = 2, 3, 3, 60, (8, 10)
    csm = random_complex((b, c, *im), _gen(13), dtype)
    traj = _random_trajectory((b, t), k, _real(dtype))
    density = _random_density((b, t), k, _real(dtype)) if with_density else None
    op = MultiCoilNUFFTOp(csm, traj, density=density, backend=backend)
    x = random_complex((b, t, *im), _gen(14), dtype)
    # The Toeplitz kernel and adjoint(forward) are two approximations (~1e-5 each with the
    # gridding; ~1e-6 / 1e-12 with finufft) of the same exact normal operator; the bounds leave a
    # margin of ~10x and would catch any scale, shift or density mistake (errors of order 1).
    tight = backend == "finufft" and dtype == torch.complex128
    assert_gram(op, x, rtol=1e-10 if tight else 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_toeplitz_gram_equals_exact_normal_matrix(backend: str) -> None:
    t, k, im = 2, 40, (6, 8)
    traj = _random_trajectory((t,), k, torch.float64)
    density = _random_density((t,), k, torch.float64)
    op = NUFFTOp(traj, im, density=density, backend=backend)
    x = random_complex((3, t, 2, *im), _gen(15), torch.complex128)  # batch 3 shares the trajectory
    got = op.gram(x)
    for i in range(t):
        e = _exact_matrix(traj[i], im)
        normal = e.mH @ (density[i, :, None] * e)
        want = (x[:, i].reshape(-1, im[0] * im[1]) @ normal.T).reshape(3, 2, *im)
        err = torch.linalg.vector_norm(got[:, i] - want) / torch.linalg.vector_norm(want)
        tol = DFT_TOL[(backend, torch.complex128)]
        assert err < tol, f"contrast {i}: relative error {float(err):.2e} > {tol:g}"


def test_toeplitz_kernel_is_computed_once_and_reused() -> None:
    op = NUFFTOp(_random_trajectory((2,), 20, torch.float64), (6, 6))
    x = random_complex((1, 2, 1, 6, 6), _gen(16), torch.complex128)
    op.gram(x)
    kernel = op.toeplitz_kernel(torch.complex128)
    op.gram(x)
    assert op.toeplitz_kernel(torch.complex128) is kernel
    assert kernel.shape == (2, 12, 12) and not kernel.is_complex()


def test_ramp_density_makes_fully_sampled_radial_gram_close_to_identity() -> None:
    n = 24
    traj = radial_trajectory(1, math.ceil(math.pi / 2 * n), 2 * n, mode="rotated", dtype=torch.float64)
    op = NUFFTOp(traj, (n, n), density=ramp_density(traj, (n, n)))
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    blob = torch.exp(-(yy**2 + xx**2) / (2 * 4.0**2)).to(torch.complex128)[None, None, None]
    err = torch.linalg.vector_norm(op.gram(blob) - blob) / torch.linalg.vector_norm(blob)
    assert err < 0.06, f"A^H A blob differs from blob by {float(err):.3f}"


# ------------------------------------------------------------------------------ autograd
def _tiny_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    b, t, c, im = 1, 2, 2, (8, 8)
    traj = radial_trajectory(t, 3, 8, dtype=torch.float64)[None]  # 3 spokes, different per contrast
    density = (0.5 + ramp_density(traj)).requires_grad_(True)
    csm = random_complex((b, c, *im), _gen(17), torch.complex128).requires_grad_(True)
    x = random_complex((b, t, *im), _gen(18), torch.complex128)
    y = random_complex((b, t, c, traj.shape[-1]), _gen(19), torch.complex128)
    return traj, density, csm, x, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["forward", "adjoint", "gram"])
def test_gradcheck_csm_and_density(which: str, backend: str) -> None:
    traj, density, csm, x, y = _tiny_problem()

    def fn(csm_: torch.Tensor, density_: torch.Tensor) -> torch.Tensor:
        op = MultiCoilNUFFTOp(csm_, traj, density=density_, backend=backend)
        return {"forward": lambda: op(x), "adjoint": lambda: op.H(y), "gram": lambda: op.gram(x)}[which]()

    assert torch.autograd.gradcheck(fn, (csm, density), fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gram_density_gradient_survives_repeated_backward_and_matches_table_gram(backend: str) -> None:
    traj, density, csm, x, _ = _tiny_problem()
    op = MultiCoilNUFFTOp(csm.detach(), traj, density=density, backend=backend)
    probe = random_complex(x.shape, _gen(20), torch.complex128)
    grads = []
    for _ in range(2):  # the cached kernel must serve more than one backward pass
        (g,) = torch.autograd.grad(torch.vdot(probe.flatten(), op.gram(x).flatten()).real, density)
        grads.append(g)
    (want,) = torch.autograd.grad(torch.vdot(probe.flatten(), op.H(op(x)).flatten()).real, density)
    assert torch.equal(grads[0], grads[1])
    assert torch.allclose(grads[0], want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["forward", "adjoint", "gram"])
def test_gradcheck_and_gradgradcheck_wrt_image_and_data(which: str, backend: str) -> None:
    traj, density, csm, x, y = _tiny_problem()
    op = MultiCoilNUFFTOp(csm.detach(), traj, density=density.detach(), backend=backend)
    fn, arg = {"forward": (op, x), "adjoint": (op.H, y), "gram": (op.gram, x)}[which]
    arg = arg.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (arg,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (arg,), fast_mode=True)


# ------------------------------------------------------------------------------ validation
def test_trajectory_outside_pi_is_rejected() -> None:
    traj = _random_trajectory((2,), 10, torch.float32)
    traj[0, 1, 3] = 4.0
    with pytest.raises(ValueError, match=r"\[-π, π\).*4\.0000"):
        NUFFTOp(traj, (8, 8))
    with pytest.raises(ValueError, match="finite"):
        NUFFTOp(torch.full((2, 2, 5), float("nan")), (8, 8))


def test_radial_trajectory_at_float32_pi_is_accepted() -> None:
    traj = torch.full((1, 2, 4), -math.pi, dtype=torch.float32)  # float32(π) rounds above π
    NUFFTOp(traj, (4, 4))
    NUFFTOp(-traj, (4, 4))


@pytest.mark.parametrize("bad, err, pattern", [
    (torch.zeros(2, 10), ValueError, r"\(\*b, T, 2, K\); got \(2, 10\)"),
    (torch.zeros(3, 3, 10), ValueError, r"\(\*b, T, 2, K\); got \(3, 3, 10\)"),
    (torch.zeros(2, 2, 10, dtype=torch.complex64), TypeError, "real floating.*complex64"),
    (torch.zeros(2, 2, 10, dtype=torch.int64), TypeError, "real floating.*int64"),
])
def test_bad_trajectory_raises(bad: torch.Tensor, err: type, pattern: str) -> None:
    with pytest.raises(err, match=pattern):
        NUFFTOp(bad, (8, 8))


def test_bad_images_and_data_raise() -> None:
    op = NUFFTOp(_random_trajectory((2, 3), 10, torch.float32), (8, 8))
    with pytest.raises(TypeError, match="complex.*float32"):
        op(torch.zeros(2, 3, 1, 8, 8))
    with pytest.raises(ValueError, match=r"T = 3 of the trajectory.*got \(2, 4, 1, 8, 8\)"):
        op(torch.zeros(2, 4, 1, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"Y, X = \(8, 8\).*got \(2, 3, 1, 8, 6\)"):
        op(torch.zeros(2, 3, 1, 8, 6, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"batch dims \(5,\).*\(2,\)"):
        op(torch.zeros(5, 3, 1, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"T, K = \(3, 10\).*got \(2, 3, 1, 9\)"):
        op.adjoint(torch.zeros(2, 3, 1, 9, dtype=torch.complex64))


def test_bad_density_and_csm_raise() -> None:
    traj = _random_trajectory((2, 3), 10, torch.float32)
    with pytest.raises(ValueError, match=r"T, K = \(3, 10\).*got \(3, 9\)"):
        NUFFTOp(traj, (8, 8), density=torch.ones(3, 9))
    with pytest.raises(TypeError, match="density must be a real"):
        NUFFTOp(traj, (8, 8), density=torch.ones(3, 10, dtype=torch.complex64))
    with pytest.raises(ValueError, match="non-negative"):
        NUFFTOp(traj, (8, 8), density=-torch.ones(3, 10))
    with pytest.raises(TypeError, match="csm must be a complex tensor.*float32"):
        MultiCoilNUFFTOp(torch.ones(2, 4, 8, 8), traj)
    with pytest.raises(ValueError, match="batch dims must broadcast"):
        MultiCoilNUFFTOp(torch.ones(3, 4, 8, 8, dtype=torch.complex64), traj)
    op = MultiCoilNUFFTOp(torch.ones(2, 4, 8, 8, dtype=torch.complex64), traj)
    with pytest.raises(ValueError, match=r"T = 3 of the trajectory.*got \(2, 5, 8, 8\)"):
        op(torch.zeros(2, 5, 8, 8, dtype=torch.complex64))
