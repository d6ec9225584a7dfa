"""Fixed synthetic splits in HDF5: write once (atomically), reuse, read back.

File layout (fastMRI-like: one file per split, samples along the first axis, plain h5py)::

    /kspace        (N, T, C, Y, X) complex64   zero where not sampled   [radial: (N, T, C, K)]
    /mask          (N, T, Y, X)    bool                                  [radial: /trajectory (N, T, 2, K)]
    /csm           (N, C, Y, X)    complex64
    /params        (N, 3, Y, X)    float32     Re M0, Im M0, R1 [1/s]
    /images        (N, T, Y, X)    complex64   noise-free
    /brain_mask    (N, Y, X)       bool
    /times         (N, T)          float32     seconds
    /sigma, /acceleration (N,)     float32
    /slice_index   (N,)            int64
    attributes: format, code_version, fingerprint, n_samples, created, and when written from a
    T1MappingDataset: source, split, seed, seeds (per-sample generator seeds), times,
    accelerations, acceleration_kind, noise_sigma, n_coils, image_size, trajectory, slice_ids;
    plus whatever ``attrs`` the caller gives.

Every dataset is chunked one sample per chunk (fast random access) and, by default, compressed
with LZF (ships with h5py; the unsampled zeros of k-space shrink to almost nothing).

A file is written under a temporary name in the target folder and renamed with ``os.replace``
only when complete, so a crash never leaves a half-written file under the final name.
:func:`ensure_t1_dataset_h5` stores a fingerprint of its arguments (and the code version) and
returns an existing file unchanged when the same arguments ask again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "code_version",
    "dataset_fingerprint",
    "write_t1_dataset_h5",
    "ensure_t1_dataset_h5",
    "read_t1_dataset_h5",
    "read_h5_attrs",
    "H5T1Dataset",
]

FORMAT = "pinqi-t1-synthetic-v1"
# arguments that change where things come from, not what is generated
_NOT_FINGERPRINTED = ("cache_dir", "download")


def code_version() -> str:
    """Installed version of the ``pinqi`` distribution, ``"0+unknown"`` if not installed."""
    try:
        return importlib.metadata.version("pinqi")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _canonical(value: Any) -> Any:
    """JSON-able canonical form of dataset arguments."""
    from .anatomy import Anatomy

    if isinstance(value, Anatomy):
        digest = hashlib.sha256(value.fractions.contiguous().numpy().tobytes()).hexdigest()
        return {"anatomy": [value.source, value.split, list(value.class_names), list(value.voxel_size_mm),
                            list(value.slice_ids), digest]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__name__: _canonical(dataclasses.asdict(value))}
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items()) if k not in _NOT_FINGERPRINTED}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot fingerprint an argument of type {type(value).__name__}: {value!r}")


def dataset_fingerprint(args: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``args`` and the code version."""
    payload = json.dumps({"args": _canonical(dict(args)), "version": code_version(), "format": FORMAT},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _attr_value(value: Any) -> Any:
    """A value h5py can store as an attribute (sequences -> arrays, the rest -> JSON text)."""
    if isinstance(value, (bool, int, float, str, np.ndarray, np.generic)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=h5py.string_dtype())
        if all(isinstance(v, (bool, int, float)) for v in value):
            return np.asarray(value)
    return json.dumps(_canonical(value))


def _dataset_attrs(ds: Any) -> dict[str, Any]:
    from .t1_dataset import T1MappingDataset, sample_seed

    if not isinstance(ds, T1MappingDataset):
        return {}
    a = ds.anatomy
    return {
        "source": a.source,
        "split": a.split,
        "slice_ids": list(a.slice_ids),
        "seed": ds.seed,
        "seeds": np.array([sample_seed(ds.seed, i) for i in range(len(ds))], dtype=np.int64),
        "times": ds.times.numpy(),
        "acceleration_kind": ds.acceleration_kind,
        "accelerations": np.asarray(ds.acceleration_values),
        "noise_sigma": np.asarray(ds.noise_sigma),
        "n_coils": ds.n_coils,
        "image_size": np.asarray(ds.image_size),
        "trajectory": ds.trajectory,
    }


def _samples(dataset_or_samples: Any) -> Iterable[Mapping[str, torch.Tensor]]:
    if isinstance(dataset_or_samples, Dataset) and hasattr(dataset_or_samples, "__len__"):
        return (dataset_or_samples[i] for i in range(len(dataset_or_samples)))
    return dataset_or_samples


def write_t1_dataset_h5(
    dataset_or_samples: Dataset | Iterable[Mapping[str, torch.Tensor]],
    path: str | os.PathLike,
    attrs: Mapping[str, Any] | None = None,
    *,
    compression: str | None = "lzf",
) -> Path:
    """Write every sample of a dataset (or an iterable of sample dicts) to one HDF5 file.

    Parameters
    ----------
    dataset_or_samples
        A map-style dataset with ``__len__`` (e.g. :class:`~simulation.t1_dataset.T1MappingDataset`)
        or any iterable of dicts of tensors with equal keys and shapes.
    path
        Target file; its folder must exist. An existing file is replaced only on success.
    attrs
        Extra file attributes (numbers, strings, sequences; anything else is stored as JSON).
    compression
        h5py compression filter per dataset (``"lzf"``, ``"gzip"`` or None).

    Returns
    -------
    The final path.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"the folder of path must exist; got {str(path)!r}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            n = 0
            keys: tuple[str, ...] = ()
            for sample in _samples(dataset_or_samples):
                if n == 0:
                    keys = tuple(sample)
                    for k, v in sample.items():
                        arr = torch.as_tensor(v).detach().cpu().numpy()
                        f.create_dataset(k, shape=(0, *arr.shape), maxshape=(None, *arr.shape), dtype=arr.dtype,
                                         chunks=(1, *arr.shape) if arr.ndim else (1024,), compression=compression)
                elif tuple(sample) != keys:
                    raise ValueError(f"sample {n} has keys {tuple(sample)}; the first sample had {keys}")
                for k, v in sample.items():
                    arr = torch.as_tensor(v).detach().cpu().numpy()
                    d = f[k]
                    if arr.shape != d.shape[1:]:
                        raise ValueError(f"sample {n}: {k} has shape {arr.shape}; the first sample had {d.shape[1:]}")
                    d.resize(n + 1, axis=0)
                    d[n] = arr
                n += 1
            meta = {**_dataset_attrs(dataset_or_samples), **dict(attrs or {})}
            meta.update(format=FORMAT, code_version=code_version(), n_samples=n,
                        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            for k, v in meta.items():
                f.attrs[k] = _attr_value(v)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_h5_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """File attributes as Python values (arrays stay numpy arrays)."""
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def holds_fingerprint(path: str | os.PathLike, fingerprint: str) -> bool:
    """Whether ``path`` is a readable HDF5 file whose ``fingerprint`` attribute is ``fingerprint``."""
    if not Path(path).is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("fingerprint") == fingerprint)
    except OSError:
        return False  # unreadable: to be rewritten


def ensure_t1_dataset_h5(path: str | os.PathLike, *, attrs: Mapping[str, Any] | None = None, **args: Any) -> Path:
    """Return ``path``, writing it from ``T1MappingDataset(**args)`` unless it already holds
    exactly that data.

    The file's ``fingerprint`` attribute (:func:`dataset_fingerprint` of ``args``, ignoring
    ``cache_dir``/``download`` inside ``anatomy_kwargs``) decides: same fingerprint -> the file
    is returned untouched; missing, unreadable or different -> it is (re)written atomically.

    Parameters
    ----------
    path
        Target file.
    attrs
        Extra attributes for a newly written file (not part of the fingerprint).
    **args
        Arguments of :class:`~simulation.t1_dataset.T1MappingDataset` (``length`` and ``seed``
        included).
    """
    from .t1_dataset import T1MappingDataset

    path = Path(path)
    fp = dataset_fingerprint(args)
    if holds_fingerprint(path, fp):
        return path
    ds = T1MappingDataset(**args)
    return write_t1_dataset_h5(ds, path, {**dict(attrs or {}), "fingerprint": fp,
                                          "arguments": json.dumps(_canonical(args), sort_keys=True)})


def read_t1_dataset_h5(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every dataset of the file as a tensor (samples along dim 0)."""
    with h5py.File(path, "r") as f:
        return {k: torch.from_numpy(np.asarray(f[k][()])) for k in f.keys()}


class H5T1Dataset(Dataset):
    """Map-style dataset over a file from :func:`write_t1_dataset_h5`; same dict as the generator.

    The file is opened lazily in each process (safe with ``DataLoader`` workers).

    Parameters
    ----------
    path
        The HDF5 file.
    keys
        Datasets to return (default all).
    """

    def __init__(self, path: str | os.PathLike, keys: Iterable[str] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        with h5py.File(self.path, "r") as f:
            available = tuple(f.keys())
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            lengths = {int(f[k].shape[0]) for k in available}
        self.keys = available if keys is None else tuple(keys)
        missing = [k for k in self.keys if k not in available]
        if missing:
            raise ValueError(f"keys {missing} not in {str(self.path)!r}; it holds {available}")
        if len(lengths) > 1:
            raise ValueError(f"datasets of {str(self.path)!r} have different lengths {sorted(lengths)}")
        self._length = lengths.pop() if lengths else 0
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self._length

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self._length <= int(index) < self._length:
            raise IndexError(f"index {index} out of range for a dataset of length {self._length}")
        f = self._handle()
        i = int(index) % self._length
        return {k: torch.from_numpy(np.asarray(f[k][i])) for k in self.keys}

    def close(self) -> None:
        """Close the file handle of this process (it reopens on the next access)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
