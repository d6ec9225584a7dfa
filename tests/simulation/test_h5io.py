"""HDF5 writing / reading of fixed synthetic splits: round trip, atomic write, reuse."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

from simulation import h5io
from simulation.anatomy import load_anatomy
from simulation.h5io import (
    H5T1Dataset,
    dataset_fingerprint,
    ensure_t1_dataset_h5,
    read_h5_attrs,
    read_t1_dataset_h5,
    write_t1_dataset_h5,
)
from simulation.t1_dataset import T1MappingDataset, sample_seed

ARGS = dict(source="phantom", split="val", length=3, seed=4, image_size=16, n_coils=2, times=(0.5, 1.0, 8.0),
            acceleration=(2, 4, 8), anatomy_kwargs={"shape": (24, 24), "n_slices": 2})


def _samples(n: int, fail_at: int | None = None):
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        if i == fail_at:
            raise RuntimeError("simulated failure")
        yield {
            "kspace": torch.randn(2, 3, 4, 4, dtype=torch.complex64, generator=g),
            "mask": torch.rand(2, 4, 4, generator=g) > 0.5,
            "params": torch.rand(3, 4, 4, generator=g),
            "sigma": torch.tensor(0.01 * i),
        }


def test_round_trip_generic_samples(tmp_path):
    path = write_t1_dataset_h5(_samples(3), tmp_path / "x.h5", {"note": "hello", "times": (0.5, 1.0)})
    expected = list(_samples(3))
    data = read_t1_dataset_h5(path)
    assert set(data) == {"kspace", "mask", "params", "sigma"}
    for k in data:
        torch.testing.assert_close(data[k], torch.stack([s[k] for s in expected]), rtol=0, atol=0)
    assert data["kspace"].dtype == torch.complex64 and data["mask"].dtype == torch.bool
    attrs = read_h5_attrs(path)
    assert attrs["note"] == "hello" and attrs["n_samples"] == 3
    np.testing.assert_allclose(attrs["times"], [0.5, 1.0])
    assert attrs["code_version"] == h5io.code_version()
    # plain h5py sees ordinary complex / bool arrays
    with h5py.File(path, "r") as f:
        assert f["kspace"].shape == (3, 2, 3, 4, 4) and f["kspace"].dtype == np.complex64
        assert f["mask"].dtype == np.bool_
    ds = H5T1Dataset(path, keys=["params", "sigma"])
    assert len(ds) == 3 and set(ds[1]) == {"params", "sigma"}
    torch.testing.assert_close(ds[-1]["params"], expected[2]["params"], rtol=0, atol=0)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="not in"):
        H5T1Dataset(path, keys=["nope"])


def test_failure_mid_write_leaves_no_file(tmp_path):
    target = tmp_path / "fail.h5"
    with pytest.raises(RuntimeError, match="simulated failure"):
        write_t1_dataset_h5(_samples(5, fail_at=2), target)
    assert list(tmp_path.iterdir()) == []
    # an existing good file survives a failed rewrite untouched
    write_t1_dataset_h5(_samples(2), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        write_t1_dataset_h5(_samples(5, fail_at=1), target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["fail.h5"]


def test_inconsistent_samples_raise(tmp_path):
    def bad():
        yield {"a": torch.zeros(2)}
        yield {"a": torch.zeros(3)}

    with pytest.raises(ValueError, match="shape"):
        write_t1_dataset_h5(bad(), tmp_path / "b.h5")
    assert list(tmp_path.iterdir()) == []


def test_t1_dataset_round_trip_and_attrs(tmp_path):
    ds = T1MappingDataset(**ARGS)
    path = write_t1_dataset_h5(ds, tmp_path / "val.h5")
    data = read_t1_dataset_h5(path)
    for i in range(len(ds)):
        s = ds[i]
        for k, v in s.items():
            torch.testing.assert_close(data[k][i], v, rtol=0, atol=0)
    assert data["kspace"].shape == (3, 3, 2, 16, 16)
    attrs = read_h5_attrs(path)
    assert attrs["source"] == "phantom" and attrs["split"] == "val" and attrs["seed"] == 4
    np.testing.assert_array_equal(attrs["seeds"], [sample_seed(4, i) for i in range(3)])
    np.testing.assert_allclose(attrs["times"], [0.5, 1.0, 8.0])
    np.testing.assert_allclose(attrs["accelerations"], [2, 4, 8])
    h = H5T1Dataset(path)
    torch.testing.assert_close(h[2]["kspace"], ds[2]["kspace"], rtol=0, atol=0)
    h.close()


def test_ensure_reuses_same_arguments_and_rewrites_others(tmp_path, monkeypatch):
    calls = []
    real_write = h5io.write_t1_dataset_h5

    def counting_write(*a, **k):
        calls.append(1)
        return real_write(*a, **k)

    monkeypatch.setattr(h5io, "write_t1_dataset_h5", counting_write)
    path = tmp_path / "val.h5"
    ensure_t1_dataset_h5(path, **ARGS)
    assert len(calls) == 1
    stat = os.stat(path)
    fp = read_h5_attrs(path)["fingerprint"]
    assert fp == dataset_fingerprint(ARGS)
    # same arguments (download/cache_dir do not count): nothing written
    same = {**ARGS, "anatomy_kwargs": {**ARGS["anatomy_kwargs"], "cache_dir": str(tmp_path)}}
    assert ensure_t1_dataset_h5(path, **same) == path
    assert len(calls) == 1 and os.stat(path).st_mtime_ns == stat.st_mtime_ns and os.stat(path).st_ino == stat.st_ino
    # different arguments: rewritten
    ensure_t1_dataset_h5(path, **{**ARGS, "seed": 5})
    assert len(calls) == 2 and read_h5_attrs(path)["fingerprint"] != fp
    assert read_h5_attrs(path)["seed"] == 5


def test_fingerprint_is_canonical():
    a = dataset_fingerprint({"seed": 1, "times": (0.5, 1.0), "dtype": torch.complex64})
    b = dataset_fingerprint({"dtype": torch.complex64, "times": [0.5, 1.0], "seed": 1})
    assert a == b and a != dataset_fingerprint({"seed": 2, "times": (0.5, 1.0), "dtype": torch.complex64})
    anatomy = load_anatomy("phantom", "val", shape=(8, 8), n_slices=1)
    other = load_anatomy("phantom", "val", shape=(8, 8), n_slices=1, seed=1)
    assert dataset_fingerprint({"anatomy": anatomy}) != dataset_fingerprint({"anatomy": other})
    with pytest.raises(TypeError, match="fingerprint"):
        dataset_fingerprint({"x": object()})
