"""BrainWeb: the 20 normal anatomical models (fuzzy tissue memberships), downloaded once and cached.

Source: https://brainweb.bic.mni.mcgill.ca/anatomic_normal_20.html (Aubert-Broche et al.,
NeuroImage 2006; Cocosco et al., NeuroImage 1997). Terms of use: see ``NOTICE``.

What is downloaded (assumptions, all parameters of :func:`download_brainweb`):

* one file per subject and class from the BrainWeb CGI form ``base_url`` with
  ``do_download_alias=subjectNN_<class>``, ``format_value=raw_short``, ``zip_value=gnuzip``;
  classes ``bck csf gry wht fat mus m-s skl ves fat2 dura mrw`` (:data:`FUZZY_CLASSES`);
* each file is gzip'd raw unsigned 16-bit little-endian (``dtype="<u2"``, as read by existing
  BrainWeb readers on x86) of shape (z, y, x) = (362, 434, 362), 0.5 mm isotropic;
* the absolute scale of the fuzzy values is not relied on: memberships are normalised so that
  the 12 classes (background included) sum to 1 in every voxel.

Cache: one HDF5 file per subject, ``<cache_dir>/subjectNN.h5`` with dataset ``"fractions"``
uint8 ``(12, Z, Y, X)`` (membership × 255, background first) and attributes ``classnames``,
``subject``, ``version``, ``source_url``, ``voxel_size_mm``. The default cache folder is
``$PINQI_CACHE/brainweb`` or ``~/.cache/pinqi/brainweb``. Every transfer goes to a ``.part``
file, is checked (byte count against Content-Length, gzip integrity, decompressed size) and
only then renamed; the HDF5 file is written under a temporary name and renamed when complete,
so an interrupted download never leaves a file that looks complete. A valid cache file (right
attributes and shape) is never downloaded again.

Loading (:func:`load_brainweb`, ``load_anatomy("brainweb", split)``) averages 2×2×2 blocks
(0.5 mm -> 1 mm: (181, 217, 181)), flips y so that anterior is at row 0 (BrainWeb's y axis
points anterior), drops the background class and keeps axial slices with at least
``min_brain_fraction`` of the brain tissue (csf+gm+wm) of the subject's fullest slice. Slice ids
are ``"brainweb:subjectNN:z=K"`` with K on the 1 mm grid. Nothing is cached in memory: a train
split is large (16 subjects × ~110 slices × 11 classes × 217 × 181 float32 ≈ 2.7 GB); pass
``subjects=`` or ``slice_step=`` to load less.

Fixed subject split (16/1/3, as in the PINQI paper; the paper does not say which):
test = 04, 05, 06; val = 18; train = the other 16.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .anatomy_base import SPLITS, Anatomy

__all__ = [
    "download_brainweb", "load_brainweb", "brainweb_url", "default_cache_dir", "BrainWebDownloadError",
    "SUBJECTS", "SPLIT_SUBJECTS", "FUZZY_CLASSES", "CLASS_NAMES", "BASE_URL", "SHAPE",
]

log = logging.getLogger(__name__)

BASE_URL = "http://brainweb.bic.mni.mcgill.ca/cgi/brainweb1"
SHAPE: tuple[int, int, int] = (362, 434, 362)
RAW_DTYPE = "<u2"
VOXEL_MM = 0.5
CACHE_VERSION = 1
SUBJECTS: tuple[str, ...] = (
    "04", "05", "06", "18", "20", "38", "41", "42", "43", "44",
    "45", "46", "47", "48", "49", "50", "51", "52", "53", "54",
)
SPLIT_SUBJECTS: dict[str, tuple[str, ...]] = {
    "test": ("04", "05", "06"),
    "val": ("18",),
    "train": tuple(s for s in SUBJECTS if s not in ("04", "05", "06", "18")),
}
#: BrainWeb alias of each fuzzy class (background first), and our lowercase names
FUZZY_CLASSES: tuple[str, ...] = ("bck", "csf", "gry", "wht", "fat", "mus", "m-s", "skl", "ves", "fat2", "dura", "mrw")
CLASS_NAMES: tuple[str, ...] = (
    "background", "csf", "gm", "wm", "fat", "muscle", "muscle_skin", "skull", "vessels", "fat2", "dura", "marrow",
)
_BRAIN = ("csf", "gm", "wm")
_CHUNK = 1 << 20


class BrainWebDownloadError(OSError):
    """A BrainWeb file could not be fetched or failed its integrity checks."""


class _TransferError(Exception):
    """Retryable: truncated transfer, corrupt gzip, wrong size."""


def default_cache_dir() -> Path:
    """``$PINQI_CACHE/brainweb`` if PINQI_CACHE is set, else ``~/.cache/pinqi/brainweb``."""
    root = os.environ.get("PINQI_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "pinqi") / "brainweb"


def brainweb_url(subject: str, tissue: str, base_url: str = BASE_URL) -> str:
    """Download URL of one fuzzy class (``tissue`` in :data:`FUZZY_CLASSES`) of one subject."""
    return (
        f"{base_url}?do_download_alias=subject{subject}_{tissue}&format_value=raw_short"
        "&zip_value=gnuzip&download_for_real=%5BStart+download%21%5D"
    )


def _subjects(subjects: Iterable[str | int] | None) -> list[str]:
    if subjects is None:
        return list(SUBJECTS)
    if isinstance(subjects, (str, int)):
        subjects = [subjects]
    out = []
    for s in subjects:
        sid = f"{int(s):02d}" if isinstance(s, int) or str(s).isdigit() else str(s)
        if sid not in SUBJECTS:
            raise ValueError(f"unknown BrainWeb subject {s!r}; expected one of {SUBJECTS}")
        out.append(sid)
    return out


def _cache_path(cache_dir: Path, subject: str) -> Path:
    return cache_dir / f"subject{subject}.h5"


def _cache_shape(path: Path, subject: str) -> tuple[int, ...] | None:
    """Shape (Z, Y, X) of a valid cache file, or None if it is absent or not ours."""
    import h5py

    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            ds = f["fractions"]
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["classnames"])
            ok = (
                int(f.attrs["version"]) == CACHE_VERSION
                and str(f.attrs["subject"]) == subject
                and names == CLASS_NAMES
                and ds.dtype == np.uint8
                and ds.ndim == 4
                and ds.shape[0] == len(CLASS_NAMES)
            )
            return tuple(int(n) for n in ds.shape[1:]) if ok else None
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _verify_gzip(path: Path, n_bytes: int) -> None:
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK * 8):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise _TransferError(f"corrupt gzip data ({err})") from None
    if total != n_bytes:
        raise _TransferError(f"decompressed size {total} bytes, expected {n_bytes}")


def _fetch(url: str, dest: Path, *, n_bytes: int, timeout: float, retries: int, retry_wait: float) -> None:
    """Download ``url`` to ``dest`` (checked, atomic), trying ``retries`` more times on failure."""
    part = dest.with_name(dest.name + ".part")
    last: str = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(retry_wait * 2 ** (attempt - 1))
        try:
            req = urllib.request.Request(url, headers={"Accept-Encoding": "identity", "User-Agent": "pinqi"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
                expected = resp.headers.get("Content-Length")
                got = 0
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    got += len(chunk)
            if expected is not None and got != int(expected):
                raise _TransferError(f"transfer interrupted: {got} of {expected} bytes")
            _verify_gzip(part, n_bytes)
            os.replace(part, dest)
            return
        except urllib.error.HTTPError as err:
            part.unlink(missing_ok=True)
            if 400 <= err.code < 500:
                raise BrainWebDownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
            last = f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, _TransferError) as err:
            part.unlink(missing_ok=True)
            reason = getattr(err, "reason", err)
            last = f"timed out after {timeout} s" if isinstance(reason, TimeoutError) else str(reason)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        log.warning("BrainWeb download %s failed (attempt %d of %d): %s", url, attempt + 1, retries + 1, last)
    raise BrainWebDownloadError(f"{url}: failed after {retries + 1} attempts; last error: {last}")


def _read_raw(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=dtype).reshape(shape)


def _build_cache(subject: str, parts: Sequence[Path], dest: Path, dtype: np.dtype, shape: tuple[int, ...], url: str) -> None:
    """Normalise the 12 memberships to sum 1 and write them as uint8 to ``dest`` (atomically)."""
    import h5py

    total = np.zeros(shape, dtype=np.float32)
    for p in parts:
        total += _read_raw(p, dtype, shape)
    empty = total <= 0
    scale = np.where(empty, 0.0, 255.0 / np.maximum(total, 1e-30)).astype(np.float32)
    del total
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    chunks = (1, min(2, shape[0]), shape[1], shape[2])
    try:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("fractions", shape=(len(parts), *shape), dtype=np.uint8, chunks=chunks,
                                  compression="gzip", compression_opts=4)
            for k, p in enumerate(parts):
                frac = np.rint(_read_raw(p, dtype, shape).astype(np.float32) * scale)
                if k == 0:
                    frac[empty] = 255  # no membership at all: background
                ds[k] = np.clip(frac, 0, 255).astype(np.uint8)
            f.attrs["classnames"] = np.array(CLASS_NAMES, dtype=h5py.string_dtype())
            f.attrs["subject"] = subject
            f.attrs["version"] = CACHE_VERSION
            f.attrs["source_url"] = url
            f.attrs["voxel_size_mm"] = VOXEL_MM
            f.attrs["raw_dtype"] = np.dtype(dtype).str
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_brainweb(
    subjects: Iterable[str | int] | None = None,
    cache_dir: str | Path | None = None,
    base_url: str = BASE_URL,
    timeout: float = 60.0,
    retries: int = 3,
    *,
    shape: tuple[int, int, int] = SHAPE,
    dtype: str = RAW_DTYPE,
    retry_wait: float = 1.0,
    force: bool = False,
) -> list[Path]:
    """Download the fuzzy BrainWeb models and cache each subject as one HDF5 file.

    Parameters
    ----------
    subjects : iterable of str or int, optional
        Subject ids (``"04"`` or ``4``); default all 20 (:data:`SUBJECTS`).
    cache_dir : path, optional
        Cache folder (created); default :func:`default_cache_dir`.
    base_url : str
        The BrainWeb CGI endpoint (tests point this at a local server).
    timeout : float
        Seconds without data before a transfer is abandoned (socket timeout).
    retries : int
        How many more times a failed transfer is tried (waiting ``retry_wait · 2^k`` s).
    shape : (Z, Y, X)
        Shape of each raw volume (default (362, 434, 362)).
    dtype : str
        numpy dtype of the raw samples, byte order included (default ``"<u2"``).
    force : bool
        Download again even if a valid cache file exists.

    Returns
    -------
    list of Path
        The HDF5 cache files, one per subject, in the order of ``subjects``.

    Raises
    ------
    BrainWebDownloadError
        If a file cannot be fetched intact; no complete-looking file is left behind.
    """
    subs = _subjects(subjects)
    if retries < 0 or timeout <= 0:
        raise ValueError(f"retries must be >= 0 and timeout > 0; got retries={retries}, timeout={timeout}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (Z, Y, X) positive; got {shape}")
    raw_dtype = np.dtype(dtype)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    n_bytes = int(np.prod(shape)) * raw_dtype.itemsize
    out = []
    for sid in subs:
        dest = _cache_path(cache, sid)
        if not force and _cache_shape(dest, sid) == shape:
            log.info("BrainWeb subject %s already cached at %s", sid, dest)
            out.append(dest)
            continue
        parts = []
        for tissue in FUZZY_CLASSES:
            part = cache / f"subject{sid}_{tissue}.raw.gz"
            if part.is_file():  # a verified transfer from an earlier, interrupted run
                try:
                    _verify_gzip(part, n_bytes)
                except _TransferError:
                    part.unlink()
            if not part.is_file():
                log.info("downloading BrainWeb subject %s class %s", sid, tissue)
                _fetch(brainweb_url(sid, tissue, base_url), part, n_bytes=n_bytes, timeout=timeout,
                       retries=retries, retry_wait=retry_wait)
            parts.append(part)
        _build_cache(sid, parts, dest, raw_dtype, shape, brainweb_url(sid, "<class>", base_url))
        for p in parts:
            p.unlink(missing_ok=True)
        out.append(dest)
    return out


def _load_subject(path: Path, slice_step: int) -> np.ndarray:
    """(11, Z, Y, X) float32 at 1 mm (2×2×2 block means), anterior at row 0, background dropped."""
    import h5py
    from einops import reduce

    with h5py.File(path, "r") as f:
        ds = f["fractions"]
        z, y, x = (n // 2 * 2 for n in ds.shape[1:])
        vols = []
        for k in range(1, ds.shape[0]):
            a = ds[k, :z, :y, :x].astype(np.float32) * (1 / 255)
            a = reduce(a, "(z a) (y b) (x c) -> z y x", "mean", a=2, b=2, c=2)
            vols.append(a[::slice_step, ::-1, :])
    vol = np.stack(vols)
    total = vol.sum(0)
    return np.where(total > 1, vol / np.maximum(total, 1e-12), vol).astype(np.float32)


def load_brainweb(
    split: str = "train",
    *,
    cache_dir: str | Path | None = None,
    download: bool = False,
    min_brain_fraction: float = 0.25,
    subjects: Iterable[str | int] | None = None,
    slice_step: int = 1,
    **download_kw: Any,
) -> Anatomy:
    """Load one split of BrainWeb as an :class:`Anatomy` (11 classes, 1 mm, (Y, X) = (217, 181)).

    Parameters
    ----------
    split : {"train", "val", "test"}
        Selects the subjects (:data:`SPLIT_SUBJECTS`) unless ``subjects`` is given.
    cache_dir : path, optional
        Cache folder, default :func:`default_cache_dir`.
    download : bool
        Fetch missing subjects (``download_kw`` go to :func:`download_brainweb`); otherwise a
        missing cache raises FileNotFoundError.
    min_brain_fraction : float
        Keep slices with at least this fraction of the brain tissue of the subject's fullest slice.
    subjects : iterable, optional
        Override the split's subject list.
    slice_step : int
        Keep every ``slice_step``-th 1 mm slice (to save memory).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if int(slice_step) < 1:
        raise ValueError(f"slice_step must be >= 1; got {slice_step}")
    subs = _subjects(SPLIT_SUBJECTS[split] if subjects is None else subjects)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    missing = [s for s in subs if _cache_shape(_cache_path(cache, s), s) is None]
    if missing and download:
        download_brainweb(missing, cache, **download_kw)
    elif missing:
        raise FileNotFoundError(
            f"BrainWeb subjects {missing} are not in the cache {cache}. Download them once with "
            "`pinqi simulate --download-brainweb` or `simulation.download_brainweb()` (about 20 x 12 "
            "files from brainweb.bic.mni.mcgill.ca), or pass download=True."
        )
    brain = [CLASS_NAMES.index(c) - 1 for c in _BRAIN]
    blocks, ids = [], []
    for s in subs:
        vol = _load_subject(_cache_path(cache, s), int(slice_step))
        tissue = vol[brain].sum(axis=(0, 2, 3))
        keep = np.nonzero((tissue >= float(min_brain_fraction) * tissue.max()) & (tissue > 0))[0]
        blocks.append(vol[:, keep])
        ids += [f"brainweb:subject{s}:z={int(k) * int(slice_step)}" for k in keep]
    fractions = torch.from_numpy(np.ascontiguousarray(np.concatenate(blocks, axis=1)))
    return Anatomy(
        fractions=fractions,
        class_names=CLASS_NAMES[1:],
        voxel_size_mm=(2 * VOXEL_MM, 2 * VOXEL_MM),
        source="brainweb",
        split=split,
        slice_ids=tuple(ids),
    )
