"""Every baseline and classical fit is equivariant to a global intensity scale and phase, and
refuses non-finite or empty inputs naming the caller's argument (issue #13 items 2 and 5).

For α = s·e^{iφ}: f(α·k) = (α·M0, R1) for the methods that estimate a complex M0, and
(|α|·|M0|, R1) for the magnitude-only ones (MANTIS, DeepT1). Hypothesis draws s in [1e-6, 1e6]
and φ in [0, 2π); the learned baselines are untrained (the equivariance is built in, not learned).
DOPAMINE and CoRRECT see complex images, so only their scale (φ = 0) is swept.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pinqi.baselines import MANTIS, DeepT1, cg_sense_fit, zero_filled_fit
from pinqi.baselines.correct import CoRRECT
from pinqi.baselines.dopamine import DOPAMINE
from tests.pinqi.baselines.test_baselines import _problem

Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
BATCH, MODEL = _problem()
Q = MODEL
SCALES = st.floats(min_value=-6.0, max_value=6.0).map(lambda e: 10.0**e)
PHASES = st.floats(min_value=0.0, max_value=2 * math.pi, exclude_max=True)


def _seeded(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return build().eval()
    finally:
        torch.random.set_rng_state(state)


def _magnitude(model: torch.nn.Module) -> Method:
    def run(k, csm, mask):
        out = model(k, csm, mask)
        return out["m0_abs"].to(torch.complex64), out["r1"]

    return run


def _complex(model: torch.nn.Module) -> Method:
    def run(k, csm, mask):
        params = model(k, csm, mask)["params"]
        return torch.complex(params[:, 0], params[:, 1]), params[:, 2]

    return run


def _classical(fit: Callable) -> Method:
    def run(k, csm, mask):
        params = fit(k, csm, mask, Q).params
        return torch.complex(params[:, 0], params[:, 1]), params[:, 2]

    return run


MAGNITUDE_METHODS: dict[str, Method] = {
    "MANTIS": _magnitude(_seeded(lambda: MANTIS(len(MODEL.times), features=(4, 8, 8)))),
    "DeepT1": _magnitude(_seeded(lambda: DeepT1(len(MODEL.times), hidden=4, n_layers=3, n_iterations=2,
                                                map_features=(4, 8)))),
}
COMPLEX_METHODS: dict[str, Method] = {
    "CG-SENSE + fit": _classical(cg_sense_fit),
    "zero-filled + fit": _classical(zero_filled_fit),
}
SCALE_ONLY_METHODS: dict[str, Method] = {
    "DOPAMINE": _complex(_seeded(lambda: DOPAMINE(Q, n_iterations=2, hidden=4, n_layers=3, init_features=(4, 8)))),
    "CoRRECT": _complex(_seeded(lambda: CoRRECT(Q, n_iterations=2, hidden=4, n_layers=3, map_features=(4, 8),
                                                map_bottleneck=None))),
}
ALL = {**MAGNITUDE_METHODS, **COMPLEX_METHODS, **SCALE_ONLY_METHODS}
_REFERENCE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _reference(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if name not in _REFERENCE:
        with torch.no_grad():
            _REFERENCE[name] = ALL[name](BATCH["kspace"], BATCH["csm"], BATCH["mask"])
    return _REFERENCE[name]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    inside = BATCH["brain_mask"]
    return float(((a - b).abs()[inside]).max() / b.abs()[inside].max())


def _check(name: str, alpha: complex, magnitude: bool) -> None:
    m0, r1 = _reference(name)
    with torch.no_grad():
        m0_a, r1_a = ALL[name](BATCH["kspace"] * alpha, BATCH["csm"], BATCH["mask"])
    expected_m0 = m0 * abs(alpha) if magnitude else m0 * alpha
    assert _relative(r1_a, r1) <= 1e-3, f"{name}: R1 changed by {_relative(r1_a, r1):.2e} at α = {alpha}"
    assert _relative(m0_a, expected_m0) <= 1e-3, f"{name}: M0/α changed by {_relative(m0_a, expected_m0):.2e}"


@pytest.mark.parametrize("name", [*MAGNITUDE_METHODS, *COMPLEX_METHODS])
@settings(max_examples=6, deadline=None, derandomize=True)
@given(scale=SCALES, phase=PHASES)
def test_scale_and_phase_equivariance(name: str, scale: float, phase: float) -> None:
    _check(name, scale * complex(math.cos(phase), math.sin(phase)), name in MAGNITUDE_METHODS)


@pytest.mark.parametrize("name", list(SCALE_ONLY_METHODS))
@settings(max_examples=6, deadline=None, derandomize=True)
@given(scale=SCALES)
def test_scale_equivariance_of_complex_learned_baselines(name: str, scale: float) -> None:
    _check(name, complex(scale), False)


@pytest.mark.parametrize("name", [*ALL])
@pytest.mark.parametrize("alpha", [1e-6, 1e6])
def test_extreme_scales(name: str, alpha: float) -> None:
    _check(name, complex(alpha), name in MAGNITUDE_METHODS)


def _poison(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.reshape(-1)[7] = value
    return t


@pytest.mark.parametrize("name", [*ALL])
def test_bad_inputs_are_refused_naming_the_argument(name: str) -> None:
    k, csm, mask = BATCH["kspace"], BATCH["csm"], BATCH["mask"]
    cases = {
        r"kspace must be finite": (_poison(k, math.nan), csm, mask),
        r"csm must be finite": (k, _poison(csm, math.inf), mask),
        r"kspace is all zero at index \[1\]": (torch.cat((k[:1], torch.zeros_like(k[1:]))), csm, mask),
        r"csm is all zero at index \[0\]": (k, torch.cat((torch.zeros_like(csm[:1]), csm[1:])), mask),
        r"mask is all zero at index \[\(1, 2\)\]": (k, csm, torch.cat((mask[:1], mask[1:].clone().index_fill_(1, torch.tensor([2]), False)))),
    }
    for message, args in cases.items():
        with pytest.raises(ValueError, match=message):
            ALL[name](*args)
