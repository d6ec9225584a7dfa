"""Tissue value draws, maps from fractions, brain mask."""

from __future__ import annotations

import pytest
import torch

from simulation.anatomy import CLASS_NAMES, load_anatomy
from simulation.tissues import (
    BACKGROUND_T1,
    BACKGROUND_T2,
    TISSUE_RANGES,
    TissueRange,
    brain_mask,
    map_weights,
    sample_tissue_values,
    tissue_maps,
)


def test_every_anatomy_class_has_a_range():
    assert set(CLASS_NAMES) <= set(TISSUE_RANGES)
    assert TISSUE_RANGES["gm"] == TissueRange(t1=(1.2, 2.0), t2=(0.08, 0.12), pd=(0.7, 1.0))
    assert TISSUE_RANGES["skull"].pd[1] <= 0.05


def test_values_within_class_ranges_and_deterministic():
    names = CLASS_NAMES
    draws = torch.stack([sample_tissue_values(names, torch.Generator().manual_seed(s)) for s in range(200)])
    assert draws.shape == (200, len(names), 3) and draws.dtype == torch.float32
    for k, n in enumerate(names):
        r = TISSUE_RANGES[n]
        for j, (lo, hi) in enumerate((r.t1, r.t2, r.pd)):
            v = draws[:, k, j]
            assert bool((v >= lo - 1e-6).all() and (v <= hi + 1e-6).all()), (n, j)
            if hi > lo:  # uniform: spread over most of the range
                assert float(v.max() - v.min()) > 0.8 * (hi - lo)
    again = sample_tissue_values(names, torch.Generator().manual_seed(3))
    assert torch.equal(again, draws[3])
    assert not torch.equal(draws[3], draws[4])


def test_unknown_class_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="no tissue ranges"):
        sample_tissue_values(("gm", "bone_marrow_x"))
    with pytest.raises(ValueError, match="shape"):
        map_weights(torch.zeros(2, 3), ("gm", "wm", "csf"))
    with pytest.raises(ValueError, match="low <= high"):
        TissueRange(t1=(2.0, 1.0), t2=(0.1, 0.2), pd=(0.5, 1.0))


def test_maps_are_fraction_weighted_sums_with_background():
    names = ("gm", "wm", "csf")
    values = torch.tensor([[1.5, 0.1, 0.8], [1.0, 0.08, 0.7], [3.0, 1.5, 1.0]])
    f = torch.zeros(3, 2, 2)
    f[:, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # pure GM
    f[:, 0, 1] = torch.tensor([0.5, 0.5, 0.0])  # GM/WM partial volume
    f[:, 1, 0] = torch.tensor([0.0, 0.0, 0.0])  # air
    f[:, 1, 1] = torch.tensor([0.0, 0.3, 0.0])  # WM / air edge
    m = tissue_maps(f, names, values)
    torch.testing.assert_close(m["pd"], torch.tensor([[0.8, 0.75], [0.0, 0.21]]))
    torch.testing.assert_close(m["t1"], torch.tensor([[1.5, 1.25], [BACKGROUND_T1, 0.3 * 1.0 + 0.7 * BACKGROUND_T1]]))
    torch.testing.assert_close(m["t2"][1, 0], torch.tensor(BACKGROUND_T2))
    torch.testing.assert_close(m["tissue"], f.sum(0))
    assert brain_mask(m["brain"]).tolist() == [[True, True], [False, False]]


def test_brain_mask_excludes_non_brain_classes():
    names = ("gm", "skull", "fat")
    f = torch.tensor([[0.6, 0.2], [0.4, 0.4], [0.0, 0.4]])[:, None, :]  # (K, 1, 2)
    m = tissue_maps(f, names, sample_tissue_values(names, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(m["brain"], torch.tensor([[0.6, 0.2]]))
    assert brain_mask(m["brain"]).tolist() == [[True, False]]
    # no brain class at all: every tissue counts
    w, _, names_out = map_weights(torch.ones(2, 3), ("fat", "skull"))
    assert torch.equal(w[names_out.index("brain")], torch.ones(2))


def test_phantom_maps_inside_ranges():
    a = load_anatomy("phantom", "train", shape=(32, 32), n_slices=2)
    values = sample_tissue_values(a.class_names, torch.Generator().manual_seed(1))
    m = tissue_maps(a.fractions[:, 0], a.class_names, values)
    inside = a.fractions[:, 0].sum(0) > 0.999
    assert int(inside.sum()) > 100
    t1 = m["t1"][inside]
    assert float(t1.min()) >= float(values[:, 0].min()) - 1e-5
    assert float(t1.max()) <= float(values[:, 0].max()) + 1e-5
    assert brain_mask(m["brain"]).sum() >= inside.sum()
