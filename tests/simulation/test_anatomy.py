"""Anatomy: the offline MNI152 default, the procedural phantom, the container's checks, errors."""

from __future__ import annotations

import pytest
import torch

from simulation.anatomy import Anatomy, load_anatomy
from simulation.mni152 import SPLIT_GAP, TEST_SLABS, VAL_SLABS, split_slices
from simulation.phantom import phantom_anatomy


def _z(anatomy: Anatomy) -> list[int]:
    return [int(s.split("z=")[1]) for s in anatomy.slice_ids]


@pytest.fixture(scope="module")
def mni() -> dict[str, Anatomy]:
    return {s: load_anatomy("mni152", s) for s in ("train", "val", "test")}


def test_mni152_content(mni: dict[str, Anatomy]) -> None:
    for split, a in mni.items():
        f = a.fractions
        assert a.source == "mni152" and a.split == split
        assert a.class_names == ("csf", "gm", "wm")
        assert f.dtype == torch.float32 and f.shape[0] == 3 and f.shape[2:] == (233, 197)
        assert a.voxel_size_mm == (1.0, 1.0)
        assert f.min() >= 0 and f.max() <= 1 and f.sum(0).max() <= 1 + 1e-6
        assert all(s.startswith("mni152:z=") for s in a.slice_ids) and len(a.slice_ids) == f.shape[1]
        # every class present in every split; GM and WM dominate a brain slice
        per_class = f.sum(dim=(1, 2, 3))
        assert (per_class > 0).all() and per_class[1] > per_class[0] and per_class[2] > per_class[0]
        # a brain: the tissue sits in the middle of the field of view, the border is background
        assert f[:, :, :3].sum() == 0 and f[:, :, -3:].sum() == 0 and f[:, :, :, :3].sum() == 0
    # documented split sizes with the default min_brain_fraction
    assert {s: a.n_slices for s, a in mni.items()} == {"train": 77, "val": 8, "test": 12}


def test_mni152_splits_are_disjoint_slabs_with_gap(mni: dict[str, Anatomy]) -> None:
    z = {s: _z(a) for s, a in mni.items()}
    for other in ("val", "test"):
        assert min(abs(a - b) for a in z["train"] for b in z[other]) > SPLIT_GAP
    assert not set(z["val"]) & set(z["test"])
    assert all(any(a <= v < b for a, b in VAL_SLABS) for v in z["val"])
    assert all(any(a <= v < b for a, b in TEST_SLABS) for v in z["test"])
    # split_slices on the raw grid (before the tissue filter) covers every slice at most once
    n = 189
    parts = [set(split_slices(s, n).tolist()) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(set.union(*parts)) < n


def test_mni152_min_brain_fraction_filters_slices(mni: dict[str, Anatomy]) -> None:
    f = mni["train"].fractions
    tissue = f.sum(dim=(0, 2, 3))
    loose = load_anatomy("mni152", "train", min_brain_fraction=0.0)
    strict = load_anatomy("mni152", "train", min_brain_fraction=0.6)
    assert set(_z(strict)) < set(_z(mni["train"])) < set(_z(loose))
    assert tissue.min() >= 0.25 * loose.fractions.sum(dim=(0, 2, 3)).max() - 1e-3


def test_mni152_deterministic_and_returns_copies(mni: dict[str, Anatomy]) -> None:
    a = load_anatomy("mni152", "val")
    assert torch.equal(a.fractions, mni["val"].fractions) and a.slice_ids == mni["val"].slice_ids
    a.fractions.zero_()
    assert torch.equal(load_anatomy("mni152", "val").fractions, mni["val"].fractions)


def test_phantom() -> None:
    a = load_anatomy("phantom", "train", shape=(24, 20), n_slices=3, seed=5)
    assert a.fractions.shape == (3, 3, 24, 20) and a.fractions.dtype == torch.float32
    assert a.class_names == ("csf", "gm", "wm") and a.source == "phantom"
    f = a.fractions
    assert f.min() >= 0 and f.max() <= 1 and f.sum(0).max() <= 1 + 1e-6
    # fuzzy edges: partial-volume pixels exist; the centre is white matter, the corners background
    assert ((f > 0.1) & (f < 0.9)).any()
    assert f[2, :, 12, 10].min() > 0.5 and f[:, :, 0, 0].max() < 1e-3
    # deterministic; splits and seeds differ; a generator may be passed instead
    assert torch.equal(f, load_anatomy("phantom", "train", shape=(24, 20), n_slices=3, seed=5).fractions)
    assert not torch.equal(f, load_anatomy("phantom", "val", shape=(24, 20), n_slices=3, seed=5).fractions)
    assert not torch.equal(f, phantom_anatomy((24, 20), 3, seed=6).fractions)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(phantom_anatomy(generator=g1).fractions, phantom_anatomy(generator=g2).fractions)
    assert phantom_anatomy().fractions.shape == (3, 4, 32, 32)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"source must be one of .*'mni152'.*got 'colin27'"):
        load_anatomy("colin27")
    with pytest.raises(ValueError, match=r"split must be one of .*got 'training'"):
        load_anatomy("mni152", "training")
    with pytest.raises(ValueError, match=r"split must be one of"):
        load_anatomy("phantom", "holdout")
    with pytest.raises(ValueError, match="min_brain_fraction"):
        load_anatomy("mni152", min_brain_fraction=1.5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        load_anatomy("mni152", shape=(32, 32))
    with pytest.raises(ValueError, match="shape"):
        phantom_anatomy(shape=(4, 4))
    with pytest.raises(ValueError, match="either generator or seed"):
        phantom_anatomy(generator=torch.Generator(), seed=1)


def test_anatomy_validates_its_fields() -> None:
    ok = dict(class_names=("csf", "gm"), voxel_size_mm=(1.0, 1.0), source="phantom", split="train",
              slice_ids=("a", "b"))
    Anatomy(fractions=torch.full((2, 2, 4, 4), 0.5), **ok)
    with pytest.raises(ValueError, match="sum over classes <= 1"):
        Anatomy(fractions=torch.full((2, 2, 4, 4), 0.6), **ok)
    with pytest.raises(TypeError, match="float32"):
        Anatomy(fractions=torch.full((2, 2, 4, 4), 0.5, dtype=torch.float64), **ok)
    with pytest.raises(ValueError, match=r"shape \(K, N, Y, X\)"):
        Anatomy(fractions=torch.zeros(2, 4, 4), **ok)
    with pytest.raises(ValueError, match="one name per class"):
        Anatomy(fractions=torch.zeros(3, 2, 4, 4), **ok)
    with pytest.raises(ValueError, match="one entry per slice"):
        Anatomy(fractions=torch.zeros(2, 3, 4, 4), **ok)
    with pytest.raises(ValueError, match="distinct names"):
        Anatomy(fractions=torch.zeros(2, 2, 4, 4), **{**ok, "class_names": ("csf", "GM")})
    a = Anatomy(fractions=torch.full((2, 2, 4, 4), 0.25), **ok)
    torch.testing.assert_close(a.background(), torch.full((2, 4, 4), 0.5))
    assert a.class_index("gm") == 1 and a.shape == (4, 4) and a.n_slices == 2
    with pytest.raises(ValueError, match="not in this anatomy"):
        a.class_index("wm")
