"""Library cases of the hostile-input harness (:mod:`benchmarks.robustness`): operators, solvers,
signal models, PINQI, W2Q, the baselines, the metrics, raw-data reading and reconstruction.

Each case is a small function of a fresh temporary folder; it either raises (the harness checks
the type and that the message matches ``expect``) or checks a right answer and returns ``RIGHT``.
The fixtures are tiny (2 samples, 3 saturation times, 2 coils, 16x16) and built once, before the
children fork.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import torch

from operators import MultiCoilCartesianOp, MultiCoilNUFFTOp, estimate_coil_maps, simulate_coil_maps, \
    variable_density_mask
from simulation import InversionRecovery, SaturationRecovery, SpinEcho, SpoiledGRE
from solvers import cg, data_consistency, nonlinear_fit

from .robustness import RIGHT, register

NAN, INF = math.nan, math.inf


@functools.cache
def tiny() -> SimpleNamespace:
    """Two 16x16 samples, 3 saturation times, 2 coils, 2x undersampling, complex64."""
    g = torch.Generator().manual_seed(0)
    q = SaturationRecovery(torch.tensor([0.5, 1.0, 3.0]))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    inside = yy**2 + xx**2 < 0.7
    params = torch.stack([0.8 * inside, 0.3 * inside, 0.5 + 0.7 * inside * (xx > 0)])[None].expand(2, -1, -1, -1).float()
    csm = simulate_coil_maps(2, (16, 16), generator=g)[None].expand(2, -1, -1, -1).clone()
    mask = variable_density_mask(3, (16, 16), acceleration=2, generator=g)[None].expand(2, -1, -1, -1).clone()
    k = MultiCoilCartesianOp(csm, mask)(q(params))
    return SimpleNamespace(q=q, params=params, csm=csm, mask=mask, k=k, inside=inside.expand(2, -1, -1))


def poison(t: torch.Tensor, value: float = NAN) -> torch.Tensor:
    """A copy of ``t`` with one element set to ``value``."""
    t = t.clone()
    t.reshape(-1)[37] = value
    return t


def zero_sample(t: torch.Tensor, index: int = 1) -> torch.Tensor:
    """A copy of ``t`` whose sample ``index`` is all zero."""
    t = t.clone()
    t[index] = 0
    return t


@functools.cache
def pinqi_model() -> torch.nn.Module:
    from pinqi import PINQI
    from pinqi.config import PINQIConfig

    torch.manual_seed(0)
    return PINQI(tiny().q, PINQIConfig(n_iterations=1, image_features=(4, 8), parameter_features=(4, 8))).eval()


def warm_up() -> None:
    """Build the shared fixtures and import the modules in the parent; forked children inherit them."""
    import pinqi.cli.commands  # noqa: F401
    import pinqi.cli.map  # noqa: F401
    import pinqi.io  # noqa: F401
    import pinqi.reconstruction  # noqa: F401

    tiny()
    pinqi_model()


# -- operators --------------------------------------------------------------------------------
@register("operators", r"csm must be finite")
def nan_coil_maps(tmp: Path) -> object:
    return MultiCoilCartesianOp(poison(tiny().csm), tiny().mask)


@register("operators", r"csm must be finite")
def inf_coil_maps(tmp: Path) -> object:
    return MultiCoilCartesianOp(poison(tiny().csm, INF), tiny().mask)


@register("operators", r"csm is all zero at index \[1\]")
def all_zero_coil_maps(tmp: Path) -> object:
    return MultiCoilCartesianOp(zero_sample(tiny().csm), tiny().mask)


@register("operators", r"mask is all zero")
def all_zero_mask(tmp: Path) -> object:
    return MultiCoilCartesianOp(tiny().csm, torch.zeros_like(tiny().mask))


@register("operators", r"mask must be finite")
def nan_mask(tmp: Path) -> object:
    return MultiCoilCartesianOp(tiny().csm, poison(tiny().mask.float()))


@register("operators", r"mask must have values in \[0, 1\]")
def mask_of_twos(tmp: Path) -> object:
    return MultiCoilCartesianOp(tiny().csm, 2.0 * tiny().mask.float())


@register("operators", r"x must be finite")
def forward_of_nan_image(tmp: Path) -> object:
    return MultiCoilCartesianOp(tiny().csm, tiny().mask)(poison(tiny().q(tiny().params)))


@register("operators", r"y must be finite")
def adjoint_of_inf_kspace(tmp: Path) -> object:
    return MultiCoilCartesianOp(tiny().csm, tiny().mask).adjoint(poison(tiny().k, INF))


@register("operators", r"csm must be a complex tensor")
def real_coil_maps(tmp: Path) -> object:
    return MultiCoilCartesianOp(tiny().csm.real, tiny().mask)


@register("operators", r"trajectory must be finite")
def nan_trajectory(tmp: Path) -> object:
    return MultiCoilNUFFTOp(tiny().csm[0], poison(torch.zeros(3, 2, 50)), backend="gridding")


@register("operators", r"radians/pixel")
def trajectory_in_degrees(tmp: Path) -> object:
    return MultiCoilNUFFTOp(tiny().csm[0], torch.full((3, 2, 50), 90.0), backend="gridding")


@register("operators", r"density must be finite and non-negative")
def negative_density(tmp: Path) -> object:
    return MultiCoilNUFFTOp(tiny().csm[0], torch.zeros(3, 2, 50), density=-torch.ones(3, 50), backend="gridding")


@register("operators", r"(?i)data.*(finite|nan)")
def coil_map_estimate_from_nan_kspace(tmp: Path) -> object:
    return estimate_coil_maps(poison(tiny().k[:1]), "walsh")


@register("operators", r"(?i)acceleration")
def mask_with_acceleration_zero(tmp: Path) -> object:
    return variable_density_mask(3, (16, 16), acceleration=0.0, generator=torch.Generator().manual_seed(0))


# -- solvers ----------------------------------------------------------------------------------
@register("solvers", r"b must be finite")
def cg_of_nan_rhs(tmp: Path) -> object:
    return cg(lambda x: x, poison(torch.ones(2, 64, dtype=torch.complex64)), max_iter=5)


@register("solvers", r"k must be finite|k .*finite")
def data_consistency_of_nan_kspace(tmp: Path) -> object:
    a = MultiCoilCartesianOp(tiny().csm, tiny().mask)
    return data_consistency(a, poison(tiny().k), [(0.1, torch.zeros_like(tiny().q(tiny().params)))], max_iter=5)


@register("solvers", r"λ must be finite and >= 0; got -1")
def data_consistency_negative_lambda(tmp: Path) -> object:
    a = MultiCoilCartesianOp(tiny().csm, tiny().mask)
    return data_consistency(a, tiny().k, [(-1.0, torch.zeros_like(tiny().q(tiny().params)))], max_iter=5)


@register("solvers", r"y must be finite|y .*finite")
def fit_of_nan_images(tmp: Path) -> object:
    q = tiny().q
    y = poison(q(tiny().params))
    return nonlinear_fit(q, y, tiny().params, 0.0, bounds=q.bounds)


@register("solvers", r"lam .*finite|lam must be")
def fit_with_nan_lambda(tmp: Path) -> object:
    q = tiny().q
    return nonlinear_fit(q, q(tiny().params), tiny().params, NAN, bounds=q.bounds)


@register("solvers")
def fit_at_scale_1e6_and_any_phase(tmp: Path) -> object:
    q, p = tiny().q, tiny().params
    y = q(p) * (1e6 * complex(math.cos(2.5), math.sin(2.5)))
    fit = nonlinear_fit(q, y, torch.zeros_like(p), 0.0, bounds=q.bounds)
    inside = tiny().inside
    error = ((fit[:, 2] - p[:, 2]).abs() / p[:, 2])[inside]
    return RIGHT if float(error.max()) < 0.05 else f"R1 off by {float(error.max()):.2f}"


# -- signal models ----------------------------------------------------------------------------
@register("simulation", r"looks like milliseconds")
def saturation_times_in_ms(tmp: Path) -> object:
    return SaturationRecovery(torch.tensor([500.0, 1000.0, 2000.0]))


@register("simulation", r"must be > 0")
def negative_saturation_time(tmp: Path) -> object:
    return SaturationRecovery(torch.tensor([-0.5, 1.0]))


@register("simulation", r"(?i)finite")
def nan_saturation_time(tmp: Path) -> object:
    return SaturationRecovery(torch.tensor([0.5, NAN]))


@register("simulation", r"looks like milliseconds")
def spoiled_gre_in_ms(tmp: Path) -> object:
    return SpoiledGRE(25.0, 5.0, 20.0)


@register("simulation", r"shorter than")
def inversion_time_beyond_tr(tmp: Path) -> object:
    return InversionRecovery(torch.tensor([0.5, 3.0]), tr=2.0)


@register("simulation", r"shorter than")
def echo_time_beyond_tr(tmp: Path) -> object:
    return SpinEcho(0.5, 0.6)


# -- PINQI ------------------------------------------------------------------------------------
@register("pinqi", r"kspace must be finite")
def pinqi_nan_kspace(tmp: Path) -> object:
    return pinqi_model()(poison(tiny().k), tiny().csm, tiny().mask)


@register("pinqi", r"csm must be finite")
def pinqi_inf_coil_maps(tmp: Path) -> object:
    return pinqi_model()(tiny().k, poison(tiny().csm, INF), tiny().mask)


@register("pinqi", r"all zero")
def pinqi_all_zero_kspace(tmp: Path) -> object:
    return pinqi_model()(zero_sample(tiny().k), tiny().csm, tiny().mask)


@register("pinqi", r"csm is all zero")
def pinqi_all_zero_coil_maps(tmp: Path) -> object:
    return pinqi_model()(tiny().k, zero_sample(tiny().csm, 0), tiny().mask)


@register("pinqi", r"mask is all zero")
def pinqi_all_zero_mask(tmp: Path) -> object:
    return pinqi_model()(tiny().k, tiny().csm, torch.zeros_like(tiny().mask))


@register("pinqi", r"3 acquisitions")
def pinqi_wrong_number_of_times(tmp: Path) -> object:
    return pinqi_model()(tiny().k[:, :2], tiny().csm, tiny().mask[:, :2])


@register("pinqi", r"kspace must be complex")
def pinqi_real_kspace(tmp: Path) -> object:
    return pinqi_model()(tiny().k.real, tiny().csm, tiny().mask)


@register("pinqi")
def pinqi_at_scale_1e6(tmp: Path) -> object:
    with torch.no_grad():
        ref = pinqi_model()(tiny().k, tiny().csm, tiny().mask).final
        out = pinqi_model()(tiny().k * 1e6, tiny().csm, tiny().mask).final
    error = float((out[:, 2] - ref[:, 2]).norm() / ref[:, 2].norm())
    return RIGHT if error < 1e-3 else f"R1 changed by {error:.2e}"


# -- W2Q --------------------------------------------------------------------------------------
@functools.cache
def _w2q() -> tuple[torch.nn.Module, int]:
    from pinqi.cli.map import load_map_model

    model, size, _ = load_map_model(None)
    return model, size


def _w2q_inputs(images: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> tuple:
    from pinqi.w2q.protocols import DEFAULT_PROTOCOL, DEFAULT_TYPES

    _, size = _w2q()
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) if images is None else images
    mask = torch.ones(1, size, size, dtype=torch.bool) if mask is None else mask
    return images, torch.tensor(DEFAULT_PROTOCOL)[None], torch.tensor(DEFAULT_TYPES)[None], mask


@register("w2q", r"(?i)images.*(finite|nan)")
def w2q_nan_images(tmp: Path) -> object:
    images, *rest = _w2q_inputs()
    with torch.no_grad():
        return _w2q()[0](poison(images), *rest)


@register("w2q", r"(?i)(brain_mask|mask).*(empty|zero)")
def w2q_empty_brain_mask(tmp: Path) -> object:
    images, params, types, mask = _w2q_inputs()
    with torch.no_grad():
        return _w2q()[0](images, params, types, torch.zeros_like(mask))


# -- baselines --------------------------------------------------------------------------------
def _mantis() -> torch.nn.Module:
    from pinqi.baselines import MANTIS

    torch.manual_seed(0)
    return MANTIS(3, features=(4, 8)).eval()


@register("baselines", r"kspace must be finite")
def mantis_nan_kspace(tmp: Path) -> object:
    return _mantis()(poison(tiny().k), tiny().csm, tiny().mask)


@register("baselines", r"n_times = 3")
def mantis_wrong_number_of_times(tmp: Path) -> object:
    return _mantis()(tiny().k[:, :2], tiny().csm, tiny().mask[:, :2])


@register("baselines", r"csm is all zero")
def deept1_all_zero_coil_maps(tmp: Path) -> object:
    from pinqi.baselines import DeepT1

    return DeepT1(3, hidden=4, n_layers=3, n_iterations=1, map_features=(4, 8))(tiny().k, zero_sample(tiny().csm), tiny().mask)


@register("baselines", r"mask is all zero at index \[\(0, 1\)\]")
def dopamine_mask_missing_one_time(tmp: Path) -> object:
    from pinqi.baselines.dopamine import DOPAMINE

    mask = tiny().mask.clone()
    mask[0, 1] = False
    return DOPAMINE(tiny().q, n_iterations=1, hidden=4, n_layers=3, init_features=(4, 8))(tiny().k, tiny().csm, mask)


@register("baselines", r"csm must be finite")
def correct_inf_coil_maps(tmp: Path) -> object:
    from pinqi.baselines.correct import CoRRECT

    model = CoRRECT(tiny().q, n_iterations=1, hidden=4, n_layers=3, map_features=(4, 8), map_bottleneck=None)
    return model(tiny().k, poison(tiny().csm, INF), tiny().mask)


@register("baselines", r"kspace must be finite")
def cg_sense_fit_nan_kspace(tmp: Path) -> object:
    from pinqi.baselines import cg_sense_fit

    return cg_sense_fit(poison(tiny().k), tiny().csm, tiny().mask, tiny().q)


@register("baselines", r"kspace is all zero")
def zero_filled_fit_all_zero_kspace(tmp: Path) -> object:
    from pinqi.baselines import zero_filled_fit

    return zero_filled_fit(zero_sample(tiny().k), tiny().csm, tiny().mask, tiny().q)


@register("baselines", r"lam must be non-negative")
def cg_sense_negative_lambda(tmp: Path) -> object:
    from pinqi.baselines import cg_sense

    return cg_sense(tiny().k, tiny().csm, tiny().mask, lam=-0.1)


@register("baselines")
def cg_sense_fit_at_scale_1e_minus_6_and_phase(tmp: Path) -> object:
    from pinqi.baselines import cg_sense_fit

    ref = cg_sense_fit(tiny().k, tiny().csm, tiny().mask, tiny().q).params
    out = cg_sense_fit(tiny().k * (1e-6 * 1j), tiny().csm, tiny().mask, tiny().q).params
    error = float((out[:, 2] - ref[:, 2])[tiny().inside].abs().max() / ref[:, 2][tiny().inside].abs().max())
    return RIGHT if error < 1e-3 else f"R1 changed by {error:.2e}"


# -- metrics ----------------------------------------------------------------------------------
def _maps() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target = 1.0 / tiny().params[:, 2]
    return target * 1.05, target, tiny().inside


@register("metrics", r"pred has 1 NaN or inf value\(s\) inside the mask")
def nrmse_of_nan_inside_the_mask(tmp: Path) -> object:
    from pinqi.metrics import nrmse

    pred, target, mask = _maps()
    pred = pred.clone()
    pred[0, 8, 8] = NAN
    return nrmse(pred, target, mask)


@register("metrics")
def nrmse_of_nan_outside_the_mask(tmp: Path) -> object:
    from pinqi.metrics import nrmse

    pred, target, mask = _maps()
    value = nrmse(torch.where(mask, pred, NAN), torch.where(mask, target, INF), mask)
    return RIGHT if torch.allclose(value, nrmse(pred, target, mask)) else f"got {value.tolist()}"


@register("metrics", r"the mask is empty for sample\(s\) \[0, 1\]")
def mae_with_an_empty_mask(tmp: Path) -> object:
    from pinqi.metrics import mae

    pred, target, mask = _maps()
    return mae(pred, target, torch.zeros_like(mask))


@register("metrics", r"data_range must be positive")
def ssim_of_a_constant_target(tmp: Path) -> object:
    from pinqi.metrics import ssim

    pred, target, mask = _maps()
    return ssim(pred, torch.ones_like(target), mask)


@register("metrics", r"same shape")
def nrmse_of_mismatched_shapes(tmp: Path) -> object:
    from pinqi.metrics import nrmse

    pred, target, mask = _maps()
    return nrmse(pred[:1], target, mask)


@register("metrics", r"only 0 and 1")
def mae_with_a_mask_of_twos(tmp: Path) -> object:
    from pinqi.metrics import mae

    pred, target, mask = _maps()
    return mae(pred, target, 2.0 * mask.float())


@register("metrics", r"inside the mask")
def map_metrics_of_inf_inside_the_mask(tmp: Path) -> object:
    from pinqi.metrics import map_metrics

    pred, target, mask = _maps()
    return map_metrics(poison(pred, INF)[:, None].expand(-1, 2, -1, -1), target[:, None].expand(-1, 2, -1, -1),
                       mask | True, ("t1", "t2"))
