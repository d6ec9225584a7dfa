"""The discrepancy rule for the learned priors' strength (pinqi.prior_strength)."""

from __future__ import annotations

import pytest
import torch

from pinqi import PINQI
from pinqi.prior_strength import AUTO_TOLERANCE, data_misfit, reconstruct_slice

from .test_model import TINY, tiny_problem


class _Stub:
    """A 'model' whose maps at strength s sit ``offsets[s]`` away from the data (A = q = identity)."""

    def __init__(self, kspace: torch.Tensor, offsets: dict[float, float]) -> None:
        self.kspace, self.offsets, self.calls = kspace, offsets, []

    def operator(self, csm, mask):
        return lambda x: x

    def __call__(self, kspace, csm, mask, *, signal_model, prior_strength):
        self.calls.append(prior_strength)
        out = self.kspace + self.offsets[prior_strength]
        return type("Out", (), {"final": out})()


def _choose(offsets: dict[float, float]) -> tuple[float, list[float], torch.Tensor]:
    k = torch.zeros(1, 2, 3, 4)
    stub = _Stub(k, offsets)
    params, strength = reconstruct_slice(stub, k, None, None, lambda p: p, "auto")  # type: ignore[arg-type]
    return strength, stub.calls, params


def test_auto_keeps_the_largest_strength_within_the_tolerance_of_the_physics_only_misfit():
    tol = AUTO_TOLERANCE ** 0.5  # misfits are squares of the offsets
    strength, calls, params = _choose({0.0: 1.0, 1.0: 0.99 * tol, 0.5: 1.0, 0.25: 1.0})
    assert strength == 1.0 and calls == [0.0, 1.0]
    assert torch.all(params == 0.99 * tol)
    strength, calls, _ = _choose({0.0: 1.0, 1.0: 2.0, 0.5: 1.01 * tol, 0.25: 0.99 * tol})
    assert strength == 0.25 and calls == [0.0, 1.0, 0.5, 0.25]
    strength, calls, params = _choose({0.0: 1.0, 1.0: 3.0, 0.5: 2.0, 0.25: 1.5})
    assert strength == 0.0 and torch.all(params == 1.0)


def test_fixed_strengths_pass_through_and_bad_ones_are_refused():
    stub = _Stub(torch.zeros(1, 1), {0.5: 0.25})
    params, strength = reconstruct_slice(stub, torch.zeros(1, 1), None, None, lambda p: p, 0.5)  # type: ignore[arg-type]
    assert strength == 0.5 and stub.calls == [0.5] and torch.all(params == 0.25)
    with pytest.raises(ValueError, match="'auto'"):
        reconstruct_slice(_Stub(torch.zeros(1, 1), {}), torch.zeros(1, 1), None, None, lambda p: p, "always")
    with pytest.raises(ValueError, match="one slice"):
        reconstruct_slice(_Stub(torch.zeros(2, 1), {}), torch.zeros(2, 1), None, None, lambda p: p, "auto")


def test_auto_on_a_real_model_returns_the_maps_of_the_strength_it_reports():
    q, k, csm, mask, params, _ = tiny_problem(torch.complex128)
    model = PINQI(q, TINY.replace(lambda_p=0.5, lambda_y=0.5)).double().eval()
    with torch.no_grad():
        chosen, strength = reconstruct_slice(model, k, csm, mask, q, "auto")
        assert strength in (1.0, 0.5, 0.25, 0.0)
        torch.testing.assert_close(chosen, model(k, csm, mask, signal_model=q, prior_strength=strength).final)
        # the misfit is that of the maps' signal through the sampling operator
        exact = data_misfit(model, k, csm, mask, q, params)
        assert float(exact) < 1e-20
        assert float(data_misfit(model, k, csm, mask, q, chosen)) > 0
