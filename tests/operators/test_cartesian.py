"""FFTOp, MaskOp, SensitivityOp, MultiCoilCartesianOp, operator_norm and the operator benchmark."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from operators.cartesian import MultiCoilCartesianOp
from operators.fft import FFTOp
from operators.linear_operator import LinearOperator
from operators.norm import operator_norm
from operators.sampling_operator import MaskOp
from operators.sensitivity import SensitivityOp
from tests.helpers import (
    assert_adjoint,
    assert_gram,
    dense_matrix,
    random_complex,
    tiny_cartesian_problem,
)

DTYPES = [pytest.param(torch.complex64, 1e-4, id="complex64"),
          pytest.param(torch.complex128, 1e-10, id="complex128")]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _GramAsOperator(LinearOperator):
    """``AᴴA`` of ``op`` as an operator whose adjoint is itself (to test self-adjointness)."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.gram(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.gram(y)


# ------------------------------------------------------------------------------------ FFTOp
@pytest.mark.parametrize("shape, dims", [((2, 3, 8, 8), (-2, -1)), ((2, 7, 9), (-2, -1)),
                                         ((4, 5, 6), (-1,)), ((5, 6, 3), (0, 2))])
def test_fft_matches_numpy_centred_fft(shape: tuple[int, ...], dims: tuple[int, ...]) -> None:
    x = random_complex(shape, _gen(0), torch.complex128)
    want = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x.numpy(), axes=dims), axes=dims,
                                       norm="ortho"), axes=dims)
    got = FFTOp(dims)(x)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    want_inv = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(want, axes=dims), axes=dims,
                                            norm="ortho"), axes=dims)
    np.testing.assert_allclose(want_inv, x.numpy(), atol=1e-12)
    torch.testing.assert_close(FFTOp(dims).adjoint(got), x, rtol=0, atol=1e-12)


def test_fft_is_unitary_and_centred() -> None:
    x = random_complex((2, 3, 7, 8), _gen(1), torch.complex128)
    f = FFTOp()
    torch.testing.assert_close(torch.linalg.vector_norm(f(x)), torch.linalg.vector_norm(x))
    assert f.gram(x) is x
    # A constant image maps to a single peak at the centre N // 2 of k-space.
    k = f(torch.ones(7, 8, dtype=torch.complex128))
    assert k.abs().argmax().item() == (7 // 2) * 8 + 8 // 2
    torch.testing.assert_close(k[3, 4], torch.tensor(np.sqrt(56.0), dtype=torch.complex128))


# ------------------------------------------------------------------------------------ adjoints
@pytest.mark.parametrize("dtype, rtol", DTYPES)
@pytest.mark.parametrize("mask_kind", ["1d", "2d"])
@pytest.mark.parametrize("fast_gram", [True, False])
def test_multicoil_adjoint_and_gram(dtype: torch.dtype, rtol: float, mask_kind: str,
                                    fast_gram: bool) -> None:
    p = tiny_cartesian_problem(dtype=dtype, mask_kind=mask_kind, seed=4)
    op = MultiCoilCartesianOp(p.csm, p.mask, fast_gram=fast_gram)
    assert op.uses_fast_gram == (fast_gram and mask_kind == "1d")
    assert_adjoint(op, p.x, p.y, rtol)
    assert_gram(op, p.x, rtol=10 * rtol)
    assert_adjoint(_GramAsOperator(op), p.x, p.x.flip(0), rtol)  # the gram is self-adjoint


@pytest.mark.parametrize("dtype, rtol", DTYPES)
def test_building_block_adjoints(dtype: torch.dtype, rtol: float) -> None:
    p = tiny_cartesian_problem(dtype=dtype, seed=5)
    assert_adjoint(FFTOp(), p.y, p.y.flip(1), rtol)
    assert_adjoint(MaskOp(p.mask), p.x, p.x.flip(1), rtol)
    assert_adjoint(SensitivityOp(p.csm), p.x, p.y, rtol)
    assert_gram(SensitivityOp(p.csm), p.x, 10 * rtol)
    assert_gram(MaskOp(p.mask), p.x, 10 * rtol)
    weights = torch.rand(p.mask.shape, generator=_gen(2), dtype=torch.float64)
    assert_gram(MaskOp(weights), p.x, 10 * rtol)  # fractional mask: gram = mask²


@pytest.mark.parametrize("shape", [(7, 9), (9, 6), (6, 7)])
@pytest.mark.parametrize("mask_kind", ["1d", "2d"])
def test_gram_with_odd_sizes(shape: tuple[int, int], mask_kind: str) -> None:
    """The shifts folded into the gram's mask are exact for odd sizes too."""
    p = tiny_cartesian_problem(Y=shape[0], X=shape[1], dtype=torch.complex128,
                               mask_kind=mask_kind, seed=6)
    op = MultiCoilCartesianOp(p.csm, p.mask)
    assert_gram(op, p.x, 1e-12)
    torch.testing.assert_close(op.gram_full(p.x), op.adjoint(op(p.x)), rtol=1e-12, atol=1e-12)


def test_equals_composition_of_building_blocks() -> None:
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=7, mask_kind="2d")
    op = MultiCoilCartesianOp(p.csm, p.mask)
    ref = MaskOp(p.mask.unsqueeze(-3)) @ FFTOp() @ SensitivityOp(p.csm)
    torch.testing.assert_close(op(p.x), ref(p.x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.adjoint(p.y), ref.adjoint(p.y), rtol=1e-12, atol=1e-12)
    # k-space is zero where not sampled.
    assert (op(p.x)[~p.mask.unsqueeze(2).expand_as(p.y)] == 0).all()


@pytest.mark.parametrize("mask_shape", ["T,Y,X", "B,T,Y,1", "1,T,Y,X", "B,1,Y,X", "T,Y,1"])
def test_broadcast_masks(mask_shape: str) -> None:
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=8)
    full = {"T,Y,X": p.mask[0], "B,T,Y,1": p.mask[..., :1], "1,T,Y,X": p.mask[:1],
            "B,1,Y,X": p.mask[:, :1], "T,Y,1": p.mask[0, :, :, :1]}[mask_shape]
    op = MultiCoilCartesianOp(p.csm, full)
    assert op.uses_fast_gram  # the tiny problem's masks are 1-D
    ref = MultiCoilCartesianOp(p.csm, full.expand(p.x.shape).clone(), fast_gram=False)
    torch.testing.assert_close(op(p.x), ref(p.x))
    torch.testing.assert_close(op.adjoint(p.y), ref.adjoint(p.y))
    torch.testing.assert_close(op.gram(p.x), ref.gram(p.x))
    assert_adjoint(op, p.x, p.y, 1e-10)


@pytest.mark.parametrize("fast_gram", [True, False])
def test_gram_in_sample_groups_with_broadcast_batches(monkeypatch: pytest.MonkeyPatch,
                                                      fast_gram: bool) -> None:
    """One sample per group (CHUNK_ELEMENTS = 1), two batch dims, coil maps shared over the
    second, a mask shared over the first, and a non-contiguous image."""
    import operators.cartesian as cartesian

    p = tiny_cartesian_problem(B=3, T=2, dtype=torch.complex128, seed=14)
    csm = p.csm.unsqueeze(1)  # (3, 1, C, Y, X)
    mask = p.mask[:2]  # (2, T, Y, X) -> batch (3, 2) through broadcasting
    x = random_complex((3, 2, 2, 8, 8), _gen(5), torch.complex128).transpose(-1, -2)
    op = MultiCoilCartesianOp(csm, mask, fast_gram=fast_gram)
    want = op.adjoint(op(x))
    whole = op.gram(x)
    monkeypatch.setattr(cartesian, "CHUNK_ELEMENTS", 1)
    grouped = op.gram(x)
    assert grouped.shape == x.shape and grouped.is_contiguous()
    torch.testing.assert_close(grouped, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(whole, want, rtol=1e-12, atol=1e-12)
    c = csm.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda cc: MultiCoilCartesianOp(cc, mask, fast_gram=fast_gram).gram(x), (c,), fast_mode=True)


def test_fractional_mask_gram() -> None:
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=9)
    weights = torch.rand(p.mask.shape[:-1] + (1,), generator=_gen(3), dtype=torch.float64)
    for fast in (True, False):
        assert_gram(MultiCoilCartesianOp(p.csm, weights, fast_gram=fast), p.x, 1e-12)


# ------------------------------------------------------------------------------------ autograd
@pytest.mark.parametrize("fast_gram", [True, False])
def test_vjp_of_forward_is_the_adjoint(fast_gram: bool) -> None:
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=10)
    op = MultiCoilCartesianOp(p.csm, p.mask, fast_gram=fast_gram)
    x = p.x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.vdot(p.y.reshape(-1), op(x).reshape(-1)).real, x)
    torch.testing.assert_close(g, op.adjoint(p.y), rtol=1e-12, atol=1e-12)
    # The gram is self-adjoint, so its vector-Jacobian product is the gram itself.
    (g,) = torch.autograd.grad(op.gram(x), x, grad_outputs=p.x.flip(0))
    torch.testing.assert_close(g, op.gram(p.x.flip(0)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mask_kind, fast_gram", [("1d", True), ("1d", False), ("2d", True)])
def test_gradcheck_wrt_csm_and_x(mask_kind: str, fast_gram: bool) -> None:
    p = tiny_cartesian_problem(B=1, T=2, C=2, dtype=torch.complex128, seed=11, mask_kind=mask_kind)
    csm = p.csm.clone().requires_grad_(True)
    x = p.x.clone().requires_grad_(True)

    def forward(c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return MultiCoilCartesianOp(c, p.mask, fast_gram=fast_gram)(v)

    def gram(c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return MultiCoilCartesianOp(c, p.mask, fast_gram=fast_gram).gram(v)

    # fast_mode compares random projections uᴴ J v of the analytic and numerical Jacobians (the
    # full Jacobian of an 8x8 problem takes minutes on 2 cores).
    assert torch.autograd.gradcheck(forward, (csm, x), fast_mode=True)
    assert torch.autograd.gradcheck(gram, (csm, x), fast_mode=True)


def test_gradients_reach_csm_through_a_reused_operator() -> None:
    """The cached gram weight must not break repeated backward passes through one operator."""
    p = tiny_cartesian_problem(dtype=torch.complex128, seed=12)
    csm = p.csm.clone().requires_grad_(True)
    op = MultiCoilCartesianOp(csm, p.mask)
    grads = []
    for _ in range(2):
        (g,) = torch.autograd.grad(op.gram(p.x).abs().square().sum(), csm)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


# ------------------------------------------------------------------------------------ norm
def test_operator_norm_equals_largest_singular_value() -> None:
    B, T, C, Y, X = 2, 2, 3, 8, 8  # noqa: N806
    # seed 15: the top two eigenvalues of AᴴA differ by > 10 % in both samples (fast convergence).
    p = tiny_cartesian_problem(B=B, T=T, C=C, Y=Y, X=X, dtype=torch.complex128, seed=15)
    op = MultiCoilCartesianOp(p.csm, p.mask)
    dense = dense_matrix(op, (B, T, Y, X), torch.complex128, batched=True)
    blocks = dense.reshape(B, T * C * Y * X, B, T * Y * X)
    want = torch.stack([torch.linalg.svdvals(blocks[b, :, b, :])[0] for b in range(B)])
    # The operator acts per sample: the off-diagonal blocks are zero.
    assert blocks[0, :, 1, :].abs().max() == 0 and blocks[1, :, 0, :].abs().max() == 0
    for fast_gram in (True, False):
        op = MultiCoilCartesianOp(p.csm, p.mask, fast_gram=fast_gram)
        got = operator_norm(op, p.x, max_iter=300, tol=1e-13)
        assert got.shape == (B,)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_operator_norm_random_start_and_simple_operators() -> None:
    f = FFTOp()
    got = operator_norm(f, (3, 2, 8, 8), generator=_gen(0))
    torch.testing.assert_close(got, torch.ones(3), rtol=1e-6, atol=0)
    again = operator_norm(f, (3, 2, 8, 8), generator=_gen(0))
    assert torch.equal(got, again)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, 1, 1] = 1
    scaled = 3.0 * MaskOp(mask)
    x0 = torch.zeros(2, 1, 4, 4, dtype=torch.complex128)  # zero start -> random start
    torch.testing.assert_close(operator_norm(scaled, x0, generator=_gen(1)),
                               torch.tensor([3.0, 0.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_with_expected_and_received() -> None:
    p = tiny_cartesian_problem()  # B=2, T=3, C=4, 8x8, complex64
    op = MultiCoilCartesianOp(p.csm, p.mask)
    with pytest.raises(TypeError, match=r"csm must be a complex tensor .*got dtype torch.float32"):
        MultiCoilCartesianOp(p.csm.real, p.mask)
    with pytest.raises(ValueError, match=r"csm must have shape \(\*b, C, Y, X\).*got \(8, 8\)"):
        MultiCoilCartesianOp(p.csm[0, 0], p.mask)
    with pytest.raises(ValueError, match=r"mask must have shape .*Y, X = \(8, 8\).*got \(2, 3, 6, 8\)"):
        MultiCoilCartesianOp(p.csm, p.mask[:, :, :6])
    with pytest.raises(TypeError, match=r"mask must be a bool or real floating tensor; got dtype "
                                         r"torch.complex64"):
        MultiCoilCartesianOp(p.csm, p.mask.to(torch.complex64))
    with pytest.raises(ValueError, match=r"mask must have values in \[0, 1\]; got values in \[0, 2\]"):
        MultiCoilCartesianOp(p.csm, 2.0 * p.mask)
    with pytest.raises(ValueError, match=r"batch dims \(3,\) of the mask"):
        MultiCoilCartesianOp(p.csm, torch.ones(3, 3, 8, 8))
    with pytest.raises(TypeError, match=r"x must be a complex tensor .*got dtype torch.float32"):
        op(p.x.real)
    with pytest.raises(TypeError, match=r"x must have dtype torch.complex64 .*got torch.complex128"):
        op(p.x.to(torch.complex128))
    with pytest.raises(ValueError, match=r"x must have shape \(\*b, T, Y, X\) with Y, X = \(8, 8\) "
                                         r"of the coil maps; got \(2, 3, 8, 6\)"):
        op(p.x[..., :6])
    with pytest.raises(ValueError, match=r"x must have shape \(\*b, T, Y, X\) \(at least 3 dims\); "
                                         r"got \(8, 8\)"):
        op.gram(p.x[0, 0])
    with pytest.raises(ValueError, match=r"x has T = 2 contrasts but the mask \(2, 3, 8, 8\) has T = 3"):
        op(p.x[:, :2])
    with pytest.raises(ValueError, match=r"batch dims \(2,\) of csm must broadcast to the batch dims "
                                         r"\(3,\) of x"):
        op(torch.cat([p.x, p.x[:1]]))
    with pytest.raises(ValueError, match=r"y must have shape \(\*b, T, C, Y, X\) with C, Y, X = "
                                         r"\(4, 8, 8\) of the coil maps; got \(2, 3, 3, 8, 8\)"):
        op.adjoint(p.y[:, :, :3])
    with pytest.raises(ValueError, match=r"y has T = 1 contrasts"):
        op.adjoint(p.y[:, :1])
    with pytest.raises(TypeError, match=r"x must be a complex tensor"):
        SensitivityOp(p.csm)(p.x.abs())
    with pytest.raises(ValueError, match=r"must have a shape that the mask \(2, 3, 8, 8\) broadcasts "
                                         r"to; got \(2, 3, 8\)"):
        MaskOp(p.mask)(p.x[..., 0])
    with pytest.raises(ValueError, match=r"x must have shape with dims \(-2, -1\) to transform "
                                         r"\(at least 2 dims\); got \(8,\)"):
        FFTOp()(p.x[0, 0, 0])
    with pytest.raises(ValueError, match=r"max_iter must be >= 1; got 0"):
        operator_norm(op, p.x, max_iter=0)
