"""Writing a set of output files all or nothing, and the NIfTI/BIDS map files.

Every command that writes results goes through :class:`OutputSet`: each file is first written to
an unpredictable temporary name created exclusively (``O_EXCL``) in the destination folder, and
only when every file of the set is complete are they renamed to their final names. After a
failure the temporary files are removed and no final file has been touched, so a half-written
result set never appears and nothing is written through a planted symlink.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

__all__ = ["OutputSet", "check_output_folder", "write_nifti", "write_json"]


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed; refuse a path that exists and is not a folder, or is not writable."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the output folder {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"the output folder {path} is not writable")
    return path


class OutputSet:
    """All-or-nothing writing of several files into one folder.

    Examples
    --------
    >>> with OutputSet("out") as outputs:            # doctest: +SKIP
    ...     write_json(outputs.reserve("a.json"), {"x": 1})
    ...     np.save(outputs.reserve("b.npy"), np.zeros(3))
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = check_output_folder(folder)
        self._pending: list[tuple[Path, Path]] = []
        self.written: list[Path] = []

    def reserve(self, name: str) -> Path:
        """An exclusively created, empty temporary file in the folder that becomes ``name`` on success."""
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"output names must be plain file names; got {name!r}")
        suffix = "".join(Path(name).suffixes)
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(name).name}.", suffix=f".tmp{suffix}", dir=self.folder)
        os.close(fd)
        self._pending.append((Path(tmp), self.folder / name))
        return Path(tmp)

    def discard(self) -> None:
        """Remove every temporary file."""
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()

    def commit(self) -> list[Path]:
        """Rename every temporary file to its final name (``os.replace``); returns the final paths."""
        for tmp, final in self._pending:
            if not tmp.is_file() or tmp.stat().st_size == 0:
                self.discard()
                raise RuntimeError(f"output {final.name} was reserved but not written")
        for tmp, final in self._pending:
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            self.written.append(final)
        self._pending.clear()
        return self.written

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_nifti(path: str | os.PathLike, volume: np.ndarray, voxel_mm: tuple[float, float, float]) -> None:
    """Write a ``(X, Y, Z)`` float32 volume as NIfTI-1 with a diagonal affine of ``voxel_mm`` (mm).

    The file name decides the compression (``.nii.gz``); ``path`` may be a temporary name from
    :meth:`OutputSet.reserve`, which keeps the final suffixes.
    """
    import nibabel as nib

    data = np.asarray(volume, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"volume must be (X, Y, Z); got shape {data.shape}")
    affine = np.diag([*(float(v) for v in voxel_mm), 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units(xyz="mm")
    nib.save(image, str(path))


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON."""
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
