"""Offline default anatomy: the MNI ICBM152 2009a template shipped inside the nilearn wheel.

Files (nilearn package data, ``nilearn/datasets/data/``), read with nibabel without importing
nilearn: ``mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz`` and
``mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz`` — uint8 probability maps on a 1 mm grid of
shape (x, y, z) = (197, 233, 189), no intensity scaling in the header, so p = value / 255.
Copyright notice: see ``NOTICE`` at the repository root.

Processing (per axial slice z):

1. the image is ``vol[:, :, z].T`` flipped so that row 0 is anterior: (Y, X) = (233, 197);
2. brain = GM + WM > 0.5; close (3 iterations, 4-connected), fill holes, dilate by 2 voxels
   (a CSF rim around the cortex): this is the *support*;
3. CSF = clip(support − GM − WM, 0, 1); fractions (csf, gm, wm).

Splits are slabs of contiguous z (voxel index of the template grid; MNI z = index − 72 mm):

* test  : z in [46, 52) and [104, 110)
* val   : z in [74, 78) and [128, 132)
* train : every other z at least :data:`SPLIT_GAP` = 3 slices away from any test/val slab

then each split keeps only slices whose brain tissue (Σ csf+gm+wm over the slice) is at least
``min_brain_fraction`` × that of the fullest slice of the volume. With the default 0.25 the kept
range is z = 22 … 142, which gives 12 test, 8 val and 77 train slices (first load about 1 s,
later loads about 0.1 s on one CPU core).
The processed volume is cached in memory, so repeated loads only copy the selected slices.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from .anatomy_base import SPLITS, Anatomy

__all__ = ["load_mni152", "mni152_files", "split_slices", "TEST_SLABS", "VAL_SLABS", "SPLIT_GAP"]

GM_FILE = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
WM_FILE = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
#: half-open z ranges (voxel index) of the held-out slabs
TEST_SLABS: tuple[tuple[int, int], ...] = ((46, 52), (104, 110))
VAL_SLABS: tuple[tuple[int, int], ...] = ((74, 78), (128, 132))
#: slices left out between a train slice and any val/test slab
SPLIT_GAP = 3
CLASS_NAMES = ("csf", "gm", "wm")


def mni152_files() -> tuple[Path, Path]:
    """Paths of the GM and WM probability maps inside the installed nilearn package.

    Raises
    ------
    FileNotFoundError
        If nilearn or its template files are not installed.
    """
    spec = importlib.util.find_spec("nilearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        data = Path(root) / "datasets" / "data"
        gm, wm = data / GM_FILE, data / WM_FILE
        if gm.is_file() and wm.is_file():
            return gm, wm
    raise FileNotFoundError(
        f"MNI152 template files {GM_FILE} and {WM_FILE} not found in the nilearn package "
        f"(searched {roots or 'no nilearn installation'}); install nilearn>=0.10"
    )


def _read_probability(path: Path) -> np.ndarray:
    import nibabel as nib

    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj)
    if raw.dtype != np.uint8:
        # a future nilearn may store scaled floats: accept [0, 1] data as is
        return np.clip(np.asarray(img.get_fdata(dtype=np.float32)), 0, 1)
    return raw.astype(np.float32) / 255.0


@functools.lru_cache(maxsize=1)
def _processed_volume() -> tuple[np.ndarray, np.ndarray]:
    """(fractions (3, Z, Y, X) float32, brain tissue per slice (Z,)), computed once."""
    from scipy import ndimage as ndi

    gm_path, wm_path = mni152_files()
    gm, wm = _read_probability(gm_path), _read_probability(wm_path)
    if gm.shape != wm.shape or gm.ndim != 3:
        raise ValueError(f"MNI152 GM and WM maps must be 3-D of equal shape; got {gm.shape} and {wm.shape}")
    # (x, y, z) -> (z, y, x) with y flipped so that anterior is at row 0 (views, no copies)
    gm = np.transpose(gm, (2, 1, 0))[:, ::-1, :]
    wm = np.transpose(wm, (2, 1, 0))[:, ::-1, :]
    vol = np.zeros((3, *gm.shape), dtype=np.float32)
    for z in range(gm.shape[0]):
        tissue = gm[z] + wm[z]
        brain = tissue > 0.5
        if not brain.any():
            continue
        support = ndi.binary_dilation(ndi.binary_fill_holes(ndi.binary_closing(brain, iterations=3)), iterations=2)
        vol[0, z] = np.clip(support - tissue, 0.0, 1.0)
        vol[1, z] = gm[z]
        vol[2, z] = wm[z]
        total = tissue + vol[0, z]
        over = total > 1  # only from GM + WM rounding above 1
        if over.any():
            vol[:, z][:, over] /= total[over]
    per_slice = vol.sum(axis=(0, 2, 3))
    return vol, per_slice


def split_slices(split: str, n_z: int, gap: int = SPLIT_GAP) -> np.ndarray:
    """z indices (before the tissue filter) belonging to ``split`` on a grid of ``n_z`` slices."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    z = np.arange(n_z)

    def in_slabs(slabs: tuple[tuple[int, int], ...], pad: int) -> np.ndarray:
        m = np.zeros(n_z, dtype=bool)
        for a, b in slabs:
            m |= (z >= a - pad) & (z < b + pad)
        return m

    if split == "test":
        return z[in_slabs(TEST_SLABS, 0)]
    if split == "val":
        return z[in_slabs(VAL_SLABS, 0)]
    return z[~in_slabs(TEST_SLABS + VAL_SLABS, gap)]


def load_mni152(split: str = "train", *, min_brain_fraction: float = 0.25) -> Anatomy:
    """Load one split of the MNI152 anatomy (classes csf, gm, wm; 1 mm; (Y, X) = (233, 197)).

    Parameters
    ----------
    split : {"train", "val", "test"}
    min_brain_fraction : float
        Keep slices with at least this fraction of the brain tissue of the fullest slice.
    """
    if not 0.0 <= float(min_brain_fraction) <= 1.0:
        raise ValueError(f"min_brain_fraction must be in [0, 1]; got {min_brain_fraction}")
    vol, per_slice = _processed_volume()
    zs = split_slices(split, vol.shape[1])
    zs = zs[per_slice[zs] >= float(min_brain_fraction) * per_slice.max()]
    if zs.size == 0:
        raise ValueError(
            f"no MNI152 slice of split {split!r} has min_brain_fraction >= {min_brain_fraction}"
        )
    fractions = torch.from_numpy(np.ascontiguousarray(vol[:, zs]))  # fancy indexing copies
    return Anatomy(
        fractions=fractions,
        class_names=CLASS_NAMES,
        voxel_size_mm=(1.0, 1.0),
        source="mni152",
        split=split,
        slice_ids=tuple(f"mni152:z={int(z)}" for z in zs),
    )
