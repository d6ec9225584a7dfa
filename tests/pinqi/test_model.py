"""PINQI model: forward/backward in float64, gradcheck on the λ, ablation switches, bad input."""

from __future__ import annotations

import pytest
import torch

from operators import simulate_coil_maps, variable_density_mask
from pinqi import PINQI, PINQIConfig
from pinqi.config import ABLATIONS
from simulation import SaturationRecovery

TINY = PINQIConfig(
    n_iterations=2,
    image_features=(4, 8),
    parameter_features=(4, 8),
    cg_tol=1e-10,
    cg_max_iter=200,
    fit_max_iter=100,
    fit_tol=1e-12,
)


def tiny_problem(dtype: torch.dtype = torch.complex128, size: int = 16, seed: int = 0):
    """k-space of a smooth two-compartment object, 2 coils, 3 saturation times."""
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    times = torch.tensor([0.5, 1.0, 3.0], dtype=real)
    q = SaturationRecovery(times)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size, dtype=real), torch.linspace(-1, 1, size, dtype=real), indexing="ij")
    inside = (yy**2 + xx**2 < 0.7).to(real)
    params = torch.stack([0.8 * inside, 0.2 * inside, 0.5 + 0.7 * inside * (xx > 0)])[None]
    csm = simulate_coil_maps(2, (size, size), generator=g, dtype=dtype)[None]
    mask = variable_density_mask(3, (size, size), acceleration=2, generator=g)[None]
    from operators import MultiCoilCartesianOp

    kspace = MultiCoilCartesianOp(csm, mask)(q(params))
    return q, kspace, csm, mask, params, inside.bool()[None]


def test_forward_shapes_and_iterations():
    q, k, csm, mask, params, _ = tiny_problem(torch.complex64)
    model = PINQI(q, TINY.replace(cg_tol=1e-5, fit_tol=1e-6))
    out = model(k, csm, mask)
    assert len(out.parameters) == TINY.n_iterations + 1
    assert len(out.images) == TINY.n_iterations + 1
    assert out.final.shape == params.shape and out.final.dtype == torch.float32
    assert out.images[-1].shape == (1, 3, 16, 16) and out.images[-1].dtype == torch.complex64
    lower, upper = (torch.tensor(b).view(1, -1, 1, 1) for b in q.bounds)
    assert ((out.final > lower) & (out.final < upper)).all()


def test_backward_reaches_every_parameter():
    q, k, csm, mask, params, brain = tiny_problem(torch.complex64)
    model = PINQI(q, TINY.replace(cg_tol=1e-5, fit_tol=1e-6))
    out = model(k, csm, mask)
    (out.final - params).square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_gradcheck_lambdas_float64():
    q, k, csm, mask, params, _ = tiny_problem(torch.complex128, size=8)
    model = PINQI(q, TINY).double()
    names = ("raw_lambda_p", "raw_lambda_y", "raw_lambda_q")
    weights = torch.randn(params.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def loss(lp: torch.Tensor, ly: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, dict(zip(names, (lp, ly, lq))), (k, csm, mask))
        return (out.final * weights).sum()

    inputs = tuple(getattr(model, n).detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_runs_and_trains(name: str):
    q, k, csm, mask, params, _ = tiny_problem(torch.complex64)
    config = TINY.replace(cg_tol=1e-5, fit_tol=1e-6, **ABLATIONS[name])
    model = PINQI(q, config)
    out = model(k, csm, mask)
    assert len(out.parameters) == config.n_iterations + 1
    loss = (out.final - params).square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_input_is_refused():
    q, k, csm, mask, _, _ = tiny_problem(torch.complex64)
    model = PINQI(q, TINY)
    with pytest.raises(TypeError, match="complex"):
        model(k.real, csm, mask)
    with pytest.raises(ValueError, match="3 acquisitions"):
        model(k[:, :2], csm, mask)
    with pytest.raises(TypeError, match="complex128"):
        model(k.to(torch.complex128), csm.to(torch.complex128), mask)
    with pytest.raises(ValueError, match="mask"):
        model(k, csm, None)
    with pytest.raises(ValueError, match="fit_mode"):
        PINQIConfig(fit_mode="newton")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
@pytest.mark.parametrize("alpha", [1e-6, 1e-2, 30.0, 1e6, 2.0j, -0.3 + 0.4j])
def test_scale_equivariance(dtype, alpha):
    """PINQI(a k) = (a M0, R1) for complex a: the iterations run at the data's own robust scale and phase."""
    q, k, csm, mask, _, _ = tiny_problem(dtype)
    model = PINQI(q, TINY)
    if dtype == torch.complex128:
        model = model.double()
    with torch.no_grad():
        ref = model(k, csm, mask)
        out = model(k * alpha, csm, mask)
    m0 = torch.view_as_real(torch.complex(out.final[:, 0], out.final[:, 1]) / alpha)
    m0_ref = torch.view_as_real(torch.complex(ref.final[:, 0], ref.final[:, 1]))
    tol = 1e-9 if dtype == torch.complex128 else 1e-3
    assert (m0 - m0_ref).norm() <= tol * m0_ref.norm()
    assert (out.final[:, 2] - ref.final[:, 2]).norm() <= tol * ref.final[:, 2].norm()
    assert torch.allclose(out.scale / abs(alpha), ref.scale, rtol=1e-6)
    assert (out.images[-1] / alpha - ref.images[-1]).norm() <= tol * ref.images[-1].norm()


def test_all_zero_kspace_is_refused():
    q, k, csm, mask, _, _ = tiny_problem(torch.complex64)
    model = PINQI(q, TINY)
    with pytest.raises(ValueError, match="all zero"):
        model(torch.zeros_like(k), csm, mask)


def test_non_finite_and_empty_inputs_are_refused_naming_the_argument():
    q, k, csm, mask, _, _ = tiny_problem(torch.complex64)
    model = PINQI(q, TINY)
    bad_k, bad_csm = k.clone(), csm.clone()
    bad_k[0, 0, 0, 0, 0] = float("nan")
    bad_csm[-1, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="kspace must be finite"):
        model(bad_k, csm, mask)
    with pytest.raises(ValueError, match="csm must be finite"):
        model(k, bad_csm, mask)
    with pytest.raises(ValueError, match="csm is all zero"):
        model(k, torch.zeros_like(csm), mask)
    with pytest.raises(ValueError, match="mask is all zero"):
        model(k, csm, torch.zeros_like(mask))


def test_unsampled_prior_weight_fits_fully_sampled_data_as_they_are():
    """prior_weight="unsampled": with every line sampled, PINQI returns the pixel-wise fit of the data."""
    from pinqi.baselines.classical import pixelwise_fit

    q, k, csm, mask, params, inside = tiny_problem(torch.complex128)
    from operators import MultiCoilCartesianOp

    full = torch.ones_like(mask)
    k = MultiCoilCartesianOp(csm, full)(q(params))
    model = PINQI(q, TINY.replace(prior_weight="unsampled", fit_solver="varpro")).double()
    with torch.no_grad():
        out = model(k, csm, full)
    assert torch.equal(model.prior_weight(full, k), torch.zeros(1, dtype=torch.float64))
    assert 0.4 < float(model.prior_weight(mask, k)) < 0.6
    r1 = out.final[:, 2][inside]
    assert torch.allclose(r1, params[:, 2][inside], rtol=1e-7)
    constant = PINQI(q, TINY.replace(fit_solver="varpro")).double()
    with torch.no_grad():
        biased = constant(k, csm, full).final[:, 2][inside]
    assert not torch.allclose(biased, params[:, 2][inside], rtol=1e-3)


def test_prior_strength_scales_only_the_learned_priors():
    """prior_strength=1 is the trained model; 0 never consults Y_θ, and P_θ only through p₀."""
    q, k, csm, mask, params, _ = tiny_problem(torch.complex128)
    model = PINQI(q, TINY.replace(lambda_p=0.5, lambda_y=0.5)).double().eval()
    with torch.no_grad():
        default = model(k, csm, mask).final
        torch.testing.assert_close(model(k, csm, mask, prior_strength=1.0).final, default, rtol=0, atol=0)
        off = model(k, csm, mask, prior_strength=0.0)
        assert not torch.allclose(off.final, default, rtol=1e-4)
        # perturbing Y_θ changes nothing at strength 0 (it is not evaluated) but changes the default
        for p in model.image_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        torch.testing.assert_close(model(k, csm, mask, prior_strength=0.0).final, off.final, rtol=0, atol=0)
        assert not torch.allclose(model(k, csm, mask).final, default, rtol=1e-6)
        # any strength in between runs
        half = model(k, csm, mask, prior_strength=0.5).final
        assert torch.isfinite(half).all()
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="prior_strength must be a finite number >= 0"):
            model(k, csm, mask, prior_strength=bad)
