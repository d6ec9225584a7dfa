"""Tests of the baselines: MANTIS, DeepT1 and the classical pipelines (tiny 16x16 problems)."""

from __future__ import annotations

import math

import pytest
import torch

from operators import MultiCoilCartesianOp
from pinqi.common.modules import count_parameters
from pinqi.baselines import (
    DeepT1,
    MANTIS,
    MapUNet,
    cg_sense,
    cg_sense_fit,
    coil_combine,
    deept1_image_loss,
    deept1_map_loss,
    deept1_train_step,
    grid_initial_value,
    magnitude_scale,
    magnitude_to_params,
    mantis_kspace_loss,
    mantis_loss,
    mantis_train_step,
    params_to_magnitude,
    r1_to_t1,
    reference_phase,
    t1_to_r1,
    weighted_map_mse,
    zero_filled_fit,
)
from simulation import SaturationRecovery

TIMES = (0.3, 0.8, 2.5)
SIZE = 16


def _problem(
    fully_sampled: bool = False,
    dtype: torch.dtype = torch.complex64,
    batch: int = 2,
    n_coils: int = 2,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], SaturationRecovery]:
    """Noise-free k-space of smooth complex M0 / R1 maps on a disk, with SENSE-normalised coils."""
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    axis = torch.linspace(-1, 1, SIZE, dtype=real)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    disk = (x.square() + y.square()) < 0.8**2
    params = torch.zeros(batch, 3, SIZE, SIZE, dtype=real)
    for b in range(batch):
        a = torch.rand(4, generator=g, dtype=real)
        magnitude = 0.6 + 0.3 * a[0] * x + 0.2 * y
        phase = math.pi * (a[1] - 0.5) + 0.8 * x * a[2]
        r1 = 0.6 + 2.0 * a[3] + 0.5 * x * y + 0.4 * y
        params[b, 0] = torch.where(disk, magnitude * torch.cos(phase), 0)
        params[b, 1] = torch.where(disk, magnitude * torch.sin(phase), 0)
        params[b, 2] = torch.where(disk, r1, 1.0)
    centres = torch.rand(batch, n_coils, 2, generator=g, dtype=real) * 2 - 1
    amplitude = torch.exp(-((x - centres[..., 0, None, None]) ** 2 + (y - centres[..., 1, None, None]) ** 2))
    csm = amplitude * torch.exp(1j * (0.5 * x + 0.3 * y * torch.arange(1, n_coils + 1)[:, None, None]))
    csm = (csm / csm.abs().square().sum(dim=1, keepdim=True).sqrt()).to(dtype)
    if fully_sampled:
        mask = torch.ones(batch, len(TIMES), SIZE, SIZE, dtype=torch.bool)
    else:
        lines = torch.rand(batch, len(TIMES), SIZE, 1, generator=g) < 0.4
        lines[..., SIZE // 2 - 2 : SIZE // 2 + 2, :] = True
        mask = lines.expand(-1, -1, -1, SIZE)
    model = SaturationRecovery(torch.tensor(TIMES, dtype=real))
    images = model(params).to(dtype)
    kspace = MultiCoilCartesianOp(csm, mask)(images)
    brain = disk.expand(batch, -1, -1).clone()
    return {"kspace": kspace, "csm": csm, "mask": mask, "params": params, "images": images, "brain_mask": brain}, model


def _snapshot(parameters: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in parameters]


def _changed(before: list[torch.Tensor], parameters: list[torch.nn.Parameter]) -> list[bool]:
    return [not torch.equal(b, p.detach()) for b, p in zip(before, parameters)]


# -- common ------------------------------------------------------------------------------------


def test_parameter_conversions_round_trip() -> None:
    g = torch.Generator().manual_seed(1)
    params = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    params[:, 2] = params[:, 2].abs() + 0.1
    magnitude = params_to_magnitude(params)
    assert magnitude.shape == (2, 2, 4, 5)
    torch.testing.assert_close(magnitude[:, 0], torch.complex(params[:, 0], params[:, 1]).abs())
    phase = torch.atan2(params[:, 1], params[:, 0])
    torch.testing.assert_close(magnitude_to_params(magnitude[:, 0], magnitude[:, 1], phase), params)
    no_phase = magnitude_to_params(magnitude[:, 0], magnitude[:, 1])
    assert torch.all(no_phase[:, 1] == 0) and torch.all(no_phase[:, 0] >= 0)
    torch.testing.assert_close(r1_to_t1(t1_to_r1(params[:, 2])), params[:, 2])
    assert r1_to_t1(torch.tensor([0.0])).item() == pytest.approx(1000.0)
    with pytest.raises(ValueError, match=r"\(B, 3, Y, X\)"):
        params_to_magnitude(params[:, :2])


def test_coil_combine_is_operator_adjoint_and_exact_when_fully_sampled() -> None:
    batch, _ = _problem(fully_sampled=True, dtype=torch.complex128)
    combined = coil_combine(batch["kspace"], batch["csm"])
    torch.testing.assert_close(combined, batch["images"])  # Σ|csm|² = 1
    under, _ = _problem(dtype=torch.complex128)
    expected = MultiCoilCartesianOp(under["csm"], under["mask"]).adjoint(under["kspace"])
    torch.testing.assert_close(coil_combine(under["kspace"], under["csm"], under["mask"]), expected)


def test_magnitude_scale_reference_phase_and_weighted_mse() -> None:
    images = torch.zeros(2, 3, 10, 10, dtype=torch.complex128)
    images[0] = 2.0 * torch.exp(1j * torch.tensor(0.7))
    images[1, 2] = 5.0j  # last frame has the energy
    images[1, 0, 0, 0] = 30.0  # one hot pixel sets neither the 0.99 quantile nor the frame
    scale = magnitude_scale(images)
    torch.testing.assert_close(scale, torch.tensor([2.0, 5.0], dtype=torch.float64))
    phase = reference_phase(images)
    torch.testing.assert_close(phase[0], torch.full((10, 10), 0.7, dtype=torch.float64))
    torch.testing.assert_close(phase[1], torch.full((10, 10), math.pi / 2, dtype=torch.float64))
    assert magnitude_scale(torch.zeros(1, 4)).item() == 1.0

    prediction = torch.zeros(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2)
    inside = torch.tensor([[[True, False], [False, False]]])
    # inside pixel: error 2 (two channels), weight 1; three outside pixels with weight 0.5 each
    expected = (2.0 + 3 * 0.5 * 2.0) / (1 + 3 * 0.5)
    assert weighted_map_mse(prediction, target, inside, 0.5).item() == pytest.approx(expected)
    assert weighted_map_mse(prediction, target, None).item() == pytest.approx(2.0)


def test_map_unet_shapes_and_odd_sizes() -> None:
    net = MapUNet(3, 2, (4, 8))
    for shape in ((16, 16), (13, 18)):
        assert net(torch.randn(2, 3, *shape)).shape == (2, 2, *shape)


# -- MANTIS --------------------------------------------------------------------------------------


def test_mantis_forward_shapes_positive_heads_and_padding() -> None:
    torch.manual_seed(0)
    model = MANTIS(len(TIMES), features=(8, 16, 32))
    batch, _ = _problem()
    out = model(batch["kspace"], batch["csm"], batch["mask"])
    assert out["m0_abs"].shape == (2, SIZE, SIZE) and out["r1"].shape == (2, SIZE, SIZE)
    assert torch.all(out["m0_abs"] >= 0) and torch.all(out["r1"] > 0)
    assert out["zero_filled"].shape == (2, len(TIMES), SIZE, SIZE)
    full = MANTIS.to_params(out)
    assert full.shape == (2, 3, SIZE, SIZE) and torch.all(full[:, 1] == 0)

    # spatial size not divisible by 2**depth
    k = torch.nn.functional.pad(batch["kspace"], (1, 3, 1, 1))
    csm = torch.nn.functional.pad(batch["csm"], (1, 3, 1, 1))
    mask = torch.ones(2, len(TIMES), SIZE + 2, SIZE + 4, dtype=torch.bool)
    out = model(k, csm, mask)
    assert out["r1"].shape == (2, SIZE + 2, SIZE + 4)

    with pytest.raises(ValueError, match="n_times"):
        MANTIS(4, features=(8, 16))(batch["kspace"], batch["csm"], batch["mask"])
    with pytest.raises(TypeError, match="complex"):
        model(batch["kspace"].abs(), batch["csm"], batch["mask"])


def test_mantis_output_scales_with_the_data() -> None:
    """|M0| follows the data's units (per-sample normalisation), R1 does not change."""
    torch.manual_seed(0)
    model = MANTIS(len(TIMES), features=(8, 16)).eval()
    batch, _ = _problem()
    out = model(batch["kspace"], batch["csm"], batch["mask"])
    out3 = model(3.0 * batch["kspace"], batch["csm"], batch["mask"])
    torch.testing.assert_close(out3["m0_abs"], 3.0 * out["m0_abs"])
    torch.testing.assert_close(out3["r1"], out["r1"])


def test_mantis_kspace_loss_vanishes_for_exact_maps() -> None:
    batch, signal = _problem(fully_sampled=True, dtype=torch.complex128)
    operator = MultiCoilCartesianOp(batch["csm"], batch["mask"])
    magnitude = params_to_magnitude(batch["params"])
    outputs = {"m0_abs": magnitude[:, 0], "r1": magnitude[:, 1], "zero_filled": operator.adjoint(batch["kspace"])}
    exact = mantis_kspace_loss(outputs, batch, signal, operator)
    assert exact.item() < 1e-20
    # the phase reference matters: a phase-free M0 does not fit the data
    no_phase = dict(outputs, zero_filled=outputs["zero_filled"].abs().to(outputs["zero_filled"].dtype))
    assert mantis_kspace_loss(no_phase, batch, signal, operator).item() > 1e-3
    # and so do the maps
    wrong = dict(outputs, r1=1.1 * outputs["r1"])
    assert mantis_kspace_loss(wrong, batch, signal, operator).item() > 1e-5
    # the full loss is the map MSE (zero here) plus the weighted k-space term
    assert mantis_loss(outputs, batch, signal, operator).item() < 1e-20
    wrong_total = mantis_loss(wrong, batch, signal, operator, kspace_weight=0.5)
    expected = weighted_map_mse(
        torch.stack((wrong["m0_abs"], wrong["r1"]), 1), magnitude, batch["brain_mask"], 0.1
    ) + 0.5 * mantis_kspace_loss(wrong, batch, signal, operator)
    torch.testing.assert_close(wrong_total, expected)


def test_mantis_train_step_updates_all_parameters() -> None:
    torch.manual_seed(0)
    model = MANTIS(len(TIMES), features=(8, 16, 32))
    batch, signal = _problem()
    params = list(model.parameters())
    before = _snapshot(params)
    optimizer = torch.optim.Adam(params, lr=1e-3)
    loss = mantis_train_step(model, optimizer, batch, signal)
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert all(_changed(before, params))


# -- DeepT1 --------------------------------------------------------------------------------------


def _small_deept1(**kwargs: object) -> DeepT1:
    torch.manual_seed(0)
    return DeepT1(len(TIMES), hidden=6, n_iterations=2, map_features=(8, 16), **kwargs)


def test_deept1_forward_shapes() -> None:
    model = _small_deept1()
    batch, _ = _problem()
    out = model(batch["kspace"], batch["csm"], batch["mask"])
    assert out["images"].shape == (2, len(TIMES), SIZE, SIZE) and out["images"].is_complex()
    assert out["m0_abs"].shape == (2, SIZE, SIZE) and torch.all(out["r1"] > 0)
    assert DeepT1.to_params(out, reference_phase(out["images"])).shape == (2, 3, SIZE, SIZE)
    assert model.lambdas.shape == (2,) and torch.all(model.lambdas > 0)
    with pytest.raises(ValueError, match="stage"):
        model.set_stage("pretrain")


def test_deept1_data_consistency_dominates_with_small_lambda() -> None:
    """With λ → 0 and fully sampled data the DC step returns the measured images."""
    model = _small_deept1(lambda_init=1e-6).double()
    batch, _ = _problem(fully_sampled=True, dtype=torch.complex128)
    out = model(batch["kspace"], batch["csm"], batch["mask"])
    error = (out["images"] - batch["images"]).abs().max() / batch["images"].abs().max()
    assert error.item() < 1e-4


def test_deept1_image_stage_trains_only_the_image_stage() -> None:
    model = _small_deept1().set_stage("image")
    batch, signal = _problem()
    image_params, map_params = model.image_parameters(), model.map_parameters()
    before_image, before_map = _snapshot(image_params), _snapshot(map_params)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = deept1_train_step(model, optimizer, batch, signal)
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in image_params)
    assert all(p.grad is None and not p.requires_grad for p in map_params)
    assert all(_changed(before_image, image_params))  # λ included
    assert not any(_changed(before_map, map_params))
    assert model.crnn.training and not model.map_net.training
    # the image loss is what this stage minimised
    out = model(batch["kspace"], batch["csm"], batch["mask"])
    assert not out["m0_abs"].requires_grad and out["images"].requires_grad
    assert deept1_image_loss(out, {"params": batch["params"]}, signal).item() == pytest.approx(
        deept1_image_loss(out, batch).item(), rel=1e-5
    )


def test_deept1_map_stage_trains_only_the_map_stage() -> None:
    model = _small_deept1().set_stage("map")
    batch, _ = _problem()
    image_params, map_params = model.image_parameters(), model.map_parameters()
    before_image, before_map = _snapshot(image_params), _snapshot(map_params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    loss = deept1_train_step(model, optimizer, batch)
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in map_params)
    assert all(p.grad is None and not p.requires_grad for p in image_params)
    assert all(_changed(before_map, map_params))
    assert not any(_changed(before_image, image_params))
    out = model(batch["kspace"], batch["csm"], batch["mask"])
    assert not out["images"].requires_grad and out["r1"].requires_grad
    assert deept1_map_loss(out, batch).item() > 0
    # back to joint: everything trainable again
    model.set_stage("joint")
    assert all(p.requires_grad for p in model.parameters()) and model.map_net.training


# -- classical -----------------------------------------------------------------------------------


def _relative_t1_error(params: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inside = batch["brain_mask"]
    t1 = r1_to_t1(params[:, 2])
    true = r1_to_t1(batch["params"][:, 2])
    return ((t1 - true).abs() / true)[inside].max()


def test_grid_initial_value_is_exact_on_the_grid() -> None:
    signal = SaturationRecovery(torch.tensor(TIMES, dtype=torch.float64))
    r1 = torch.logspace(math.log10(0.05), math.log10(20.0), 256, dtype=torch.float64)[[40, 200]]
    params = torch.tensor([[0.3, -0.4, r1[0]], [1.2, 0.5, r1[1]]], dtype=torch.float64)[..., None, None]
    p0 = grid_initial_value(signal, signal(params))
    torch.testing.assert_close(p0, params)


@pytest.mark.parametrize("method", ["zero_filled", "cg_sense"])
def test_classical_fits_recover_t1_from_fully_sampled_data(method: str) -> None:
    batch, signal = _problem(fully_sampled=True, dtype=torch.complex128)
    if method == "zero_filled":
        result = zero_filled_fit(batch["kspace"], batch["csm"], batch["mask"], signal)
        scale = 1.0
    else:
        result = cg_sense_fit(batch["kspace"], batch["csm"], batch["mask"], signal, lam=1e-2)
        scale = 1.0 / (1.0 + 1e-2)  # Tikhonov shrinks M0 uniformly, T1 is unaffected
    assert result.params.shape == (2, 3, SIZE, SIZE) and result.images.shape == (2, len(TIMES), SIZE, SIZE)
    torch.testing.assert_close(result.images, scale * batch["images"])
    assert _relative_t1_error(result.params, batch).item() < 1e-3
    inside = batch["brain_mask"]
    m0 = torch.complex(result.params[:, 0], result.params[:, 1])[inside]
    true_m0 = scale * torch.complex(batch["params"][:, 0], batch["params"][:, 1])[inside]
    assert ((m0 - true_m0).abs() / true_m0.abs()).max().item() < 1e-3


def test_cg_sense_solves_the_tikhonov_system_per_time() -> None:
    batch, _ = _problem(dtype=torch.complex128)
    lam = 0.05
    images = cg_sense(batch["kspace"], batch["csm"], batch["mask"], lam=lam, tol=1e-10, max_iter=200)
    operator = MultiCoilCartesianOp(batch["csm"], batch["mask"])
    residual = operator.gram(images) + lam * images - operator.adjoint(batch["kspace"])
    assert residual.abs().max().item() < 1e-8


# -- sizes at the paper configuration (192x192, T = 5; constructed on the meta device) ---------


def test_parameter_counts_at_the_paper_configuration() -> None:
    with torch.device("meta"):
        mantis5, mantis8 = MANTIS(5), MANTIS(8)
        deept1_5, deept1_8 = DeepT1(5), DeepT1(8)
    assert count_parameters(mantis5) == 29_245_122  # paper: 29,248,258 (T = 8, BN after conv 1)
    assert count_parameters(mantis8) == 29_248_194
    assert count_parameters(deept1_5.crnn) == 297_538  # paper: 297,538
    assert deept1_5.lambdas_raw.numel() == 5
    assert count_parameters(deept1_5.map_net) == 20_546_178
    assert count_parameters(deept1_8.map_net) == 20_547_906  # paper: 20,547,906 (T = 8)
