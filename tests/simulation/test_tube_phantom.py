"""The nine-tube phantom: tube T1s, ROIs inside their tubes, phase, validation."""

from __future__ import annotations

import math

import pytest
import torch

from simulation.tube_phantom import TABLE_I_T1, tube_phantom


@pytest.mark.parametrize("shape", [64, (48, 57), 192])
def test_rois_hold_their_tube_t1(shape):
    ph = tube_phantom(shape, generator=torch.Generator().manual_seed(1))
    assert ph.rois.shape[0] == 9
    for index, roi in enumerate(ph.rois):
        assert int(roi.sum()) >= 5
        assert torch.allclose(1 / ph.params[2][roi], torch.tensor(TABLE_I_T1[index]), rtol=1e-6)
        assert bool((ph.labels[roi] == index + 1).all())
    bath = ph.labels == 10
    assert torch.allclose(ph.params[2][bath], torch.tensor(0.5))
    assert bool((ph.params[:2][:, ph.labels == 0] == 0).all())


def test_phase_is_drawn_and_magnitude_is_pd():
    ph = tube_phantom(64, generator=torch.Generator().manual_seed(3))
    m0 = torch.complex(ph.params[0], ph.params[1])
    inside = ph.object_mask
    assert float(m0[inside].angle().std()) > 0.05
    tubes = (ph.labels >= 1) & (ph.labels <= 9)
    assert torch.allclose(m0[tubes].abs(), torch.tensor(0.9), rtol=1e-5)
    flat = tube_phantom(64, phase_max=0.0)
    assert float(flat.params[1].abs().max()) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 24"):
        tube_phantom(16)
    with pytest.raises(ValueError, match="nine positive times in seconds"):
        tube_phantom(64, t1=[0.3] * 8)
    with pytest.raises(ValueError, match="seconds"):
        tube_phantom(64, bath_t1=math.inf)


def test_milliseconds_are_refused():
    with pytest.raises(ValueError, match="seconds"):
        tube_phantom(64, t1=[280.0] * 9)
