"""Operators refuse NaN/inf and all-zero coil maps or masks, naming the argument (issue #13 item 5)."""

from __future__ import annotations

import math

import pytest
import torch

from operators import FFTOp, MultiCoilCartesianOp, MultiCoilNUFFTOp, NUFFTOp
from operators._validation import require_finite, require_nonzero
from tests.helpers import tiny_cartesian_problem


def _poisoned(t: torch.Tensor, value: complex) -> torch.Tensor:
    t = t.clone(memory_format=torch.contiguous_format)
    t.view(-1)[3] = value
    return t


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_cartesian_refuses_non_finite_csm_mask_x_and_k(value: float) -> None:
    p = tiny_cartesian_problem()
    with pytest.raises(ValueError, match=r"csm must be finite; it has 1 NaN or inf"):
        MultiCoilCartesianOp(_poisoned(p.csm, value), p.mask)
    op = MultiCoilCartesianOp(p.csm, p.mask)
    with pytest.raises(ValueError, match=r"x must be finite"):
        op(_poisoned(p.x, value))
    with pytest.raises(ValueError, match=r"y must be finite"):
        op.adjoint(_poisoned(op(p.x), value))
    if math.isnan(value):
        with pytest.raises(ValueError, match=r"mask must be finite"):
            MultiCoilCartesianOp(p.csm, _poisoned(p.mask.float(), value))


def test_cartesian_refuses_all_zero_csm_and_mask_per_sample() -> None:
    p = tiny_cartesian_problem()  # B = 2
    csm = p.csm.clone()
    csm[1] = 0
    with pytest.raises(ValueError, match=r"csm is all zero at index \[1\]"):
        MultiCoilCartesianOp(csm, p.mask)
    mask = p.mask.clone()
    mask[0] = 0
    with pytest.raises(ValueError, match=r"mask is all zero at index \[0\]"):
        MultiCoilCartesianOp(p.csm, mask)


def test_nufft_and_fft_refuse_non_finite_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    traj = (torch.rand(2, 2, 40, generator=g) * 2 - 1) * 3.0
    csm = torch.randn(3, 8, 8, dtype=torch.complex64, generator=g)
    op = MultiCoilNUFFTOp(csm, traj, backend="gridding")
    x = torch.randn(2, 8, 8, dtype=torch.complex64, generator=g)
    with pytest.raises(ValueError, match=r"x must be finite"):
        op(_poisoned(x, math.nan))
    with pytest.raises(ValueError, match=r"y must be finite"):
        op.adjoint(_poisoned(op(x), math.inf))
    with pytest.raises(ValueError, match=r"y must be finite"):
        NUFFTOp(traj, (8, 8), backend="gridding").adjoint(_poisoned(op(x), math.nan))
    with pytest.raises(ValueError, match=r"x must be finite"):
        FFTOp()(_poisoned(x, math.nan))


def test_require_finite_tells_overflowing_sums_from_non_finite_values() -> None:
    big = torch.full((4,), 3e38)  # finite values whose float32 sum overflows
    assert require_finite("big", big) is big
    with pytest.raises(ValueError, match=r"v must be finite; it has 2 NaN"):
        require_finite("v", torch.tensor([1.0, math.nan, math.inf, 0.0]))


def test_require_nonzero_names_the_empty_entries() -> None:
    t = torch.ones(2, 3, 4)
    t[1, 2] = 0
    with pytest.raises(ValueError, match=r"t is all zero at index \[\(1, 2\)\]: nothing"):
        require_nonzero("t", t, 1, "nothing")
    assert require_nonzero("t", t, 2, "nothing") is t
