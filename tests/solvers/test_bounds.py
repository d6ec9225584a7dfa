"""Tests of the bound-enforcing reparametrisation ``p = φ(z)`` (solvers.bounds)."""

from __future__ import annotations

import math

import pytest
import torch

from solvers.bounds import Z_MAX, BoxReparametrisation

INF = math.inf
# One parameter of every kind: unbounded, lower only, upper only, two-sided.
LOWER = (-INF, 0.5, -INF, -1.0)
UPPER = (INF, INF, 3.0, 20.0)


@pytest.fixture
def reparam() -> BoxReparametrisation:
    return BoxReparametrisation(LOWER, UPPER, dtype=torch.float64)


def test_round_trip_and_identity(reparam: BoxReparametrisation) -> None:
    gen = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64)
    p = reparam.to_constrained(z)
    torch.testing.assert_close(reparam.to_unconstrained(p), z, rtol=1e-10, atol=1e-10)
    # The unbounded parameter is passed through untouched.
    assert torch.equal(p[:, 0], z[:, 0])
    ident = BoxReparametrisation.unbounded(3, torch.float64)
    assert ident.is_identity
    assert torch.equal(ident.to_constrained(z[:, :3]), z[:, :3])


def test_maps_are_the_documented_functions(reparam: BoxReparametrisation) -> None:
    z = torch.linspace(-4, 4, 9, dtype=torch.float64).reshape(1, 1, 9).expand(1, 4, 9)
    p = reparam.to_constrained(z)
    torch.testing.assert_close(p[:, 1], 0.5 + torch.nn.functional.softplus(z[:, 1]))
    torch.testing.assert_close(p[:, 2], 3.0 - torch.nn.functional.softplus(-z[:, 2]))
    torch.testing.assert_close(p[:, 3], -1.0 + 21.0 * torch.sigmoid(z[:, 3]))
    # Every map is increasing.
    assert (p[:, 1:].diff(dim=-1) > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strictly_inside_even_when_saturated(dtype: torch.dtype) -> None:
    rp = BoxReparametrisation(LOWER, UPPER, dtype=dtype)
    z = torch.tensor([-1e30, -1e4, -60.0, -20.0, 0.0, 20.0, 60.0, 1e4, 1e30], dtype=dtype)
    z = z.reshape(1, 1, -1).expand(1, 4, -1).contiguous()
    p = rp.to_constrained(z)
    assert torch.isfinite(p[:, 1:]).all()
    assert rp.contains(p)[:, 1:].all(), p
    # Same for p given on or beyond the bounds: the inverse is finite and maps back inside.
    p_out = torch.tensor([[-5.0, 0.5, 3.0, 20.0], [7.0, -2.0, 9.0, -1.0]], dtype=dtype).reshape(2, 4, 1)
    z_back = rp.to_unconstrained(p_out)
    assert torch.isfinite(z_back).all()
    assert z_back[:, 1:].abs().max() <= Z_MAX
    assert rp.contains(rp.to_constrained(z_back))[:, 1:].all()


def test_clamp_inside_and_gradient(reparam: BoxReparametrisation) -> None:
    p = torch.tensor([0.0, 0.5, 3.0, 25.0], dtype=torch.float64).reshape(1, 4, 1)
    inside = reparam.clamp_inside(p)
    assert reparam.contains(inside)[:, 1:].all()
    assert inside[0, 0, 0] == 0.0
    z = torch.zeros(1, 4, 1, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(reparam.to_constrained(z).sum(), z)
    # φ'(0): 1 (identity), sigmoid(0) = 1/2 (softplus maps), (u − l)/4 (two-sided).
    torch.testing.assert_close(grad[0, :, 0], torch.tensor([1.0, 0.5, 0.5, 21.0 / 4], dtype=torch.float64))


@pytest.mark.parametrize(
    ("lower", "upper", "match"),
    [
        ((0.0, 1.0), (1.0,), "same length"),
        ((1.0,), (1.0,), "lower < upper"),
        ((2.0,), (1.0,), "lower < upper"),
        ((math.nan,), (1.0,), "lower < upper"),
        ((INF,), (INF,), "lower < upper"),
    ],
)
def test_invalid_bounds(lower: tuple, upper: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BoxReparametrisation(lower, upper)


def test_wrong_parameter_count(reparam: BoxReparametrisation) -> None:
    with pytest.raises(ValueError, match=r"P = 4.*\(2, 3, 5\)"):
        reparam.to_constrained(torch.zeros(2, 3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="sequence of floats"):
        BoxReparametrisation("ab", (1.0, 2.0))
