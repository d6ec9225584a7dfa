"""The shipped PINQI model: it loads, says what it was trained for, and fits fully sampled data as they are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pinqi import load_pinqi
from pinqi.io import read_raw
from pinqi.io.examples import write_example_scan
from pinqi.reconstruction import reconstruct
from pinqi.training import SHIPPED_MODEL
from simulation.tube_phantom import TABLE_I_T1


def test_shipped_weights_load_with_weights_only():
    assert SHIPPED_MODEL.is_file() and SHIPPED_MODEL.stat().st_size < 5e6
    payload = torch.load(SHIPPED_MODEL, map_location="cpu", weights_only=True)
    assert set(payload) >= {"kind", "config", "model"} and "optimizer" not in payload
    model = load_pinqi()
    assert not model.training
    assert tuple(model.train_config.times) == (0.5, 1.0, 1.5, 2.0, 8.0)
    assert model.config.prior_weight == "unsampled"


@pytest.mark.parametrize("acceleration", [1.0, 8.0])
def test_phantom_scan_through_ismrmrd(tmp_path: Path, acceleration: float):
    """Fully sampled, PINQI is the pixel-wise fit (within 1.2x its tube error); at 8x it beats CG-SENSE + fit."""
    scan = write_example_scan(tmp_path / "phantom.h5", "phantom", size=64, acceleration=acceleration, seed=5)
    raw = read_raw(scan.path)
    errors = {}
    for name, kwargs in (("pinqi", {"model": load_pinqi()}), ("cg", {"baseline": "cg-sense"})):
        t1 = reconstruct(raw, **kwargs).t1[0]
        means = torch.stack([t1[roi].mean() for roi in scan.rois])
        errors[name] = float((means - torch.tensor(TABLE_I_T1)).square().mean().sqrt())
    if acceleration == 1:
        assert errors["pinqi"] <= 1.2 * errors["cg"] + 1e-4
    else:
        assert errors["pinqi"] < errors["cg"]
