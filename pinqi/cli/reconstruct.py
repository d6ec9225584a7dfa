"""``pinqi reconstruct RAW --out DIR``: T1 and M0 maps from a raw file, written as qMRI-BIDS NIfTI.

Outputs, all written together or not at all (:class:`pinqi.io.outputs.OutputSet`), named after the
raw file's stem ``<stem>``:

- ``<stem>_T1map.nii.gz`` (seconds) and ``<stem>_M0map.nii.gz`` (magnitude, arbitrary units, in
  the units of the k-space), each with a JSON sidecar (``Units``, ``EstimationMethod``,
  ``SaturationTimes``, the model, the coil-map estimator, the raw file's header). The volume is
  ``(X, Y, slices)`` with a diagonal affine of the voxel size in mm from the file's field of view;
  the scanner position is not read.
- ``<stem>_maps.h5``: ``m0`` (slices, Y, X) complex64, ``r1`` [1/s], ``t1`` [s], ``csm``.
- ``<stem>_overview.png`` and ``.pdf``: T1 and |M0| of each slice (up to four).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser is built without importing torch
    import numpy as np
    import torch

    from ..reconstruction import T1Reconstruction

__all__ = ["add_reconstruct", "run_reconstruct"]

EXAMPLE = "pinqi reconstruct scan.h5 --out maps/            # the shipped PINQI model, coil maps by ESPIRiT"


def _prior_strength(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a finite number >= 0; got {text!r}")
    return value


def add_reconstruct(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="T1/M0 maps from a raw file (ISMRMRD, fastMRI-style or pinqi HDF5) with PINQI or CG-SENSE + fit",
        description=__doc__,
        epilog=f"example: {EXAMPLE}",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("raw", type=Path, help="the raw data file")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--checkpoint", type=Path, default=None, help="PINQI weights (default: the shipped model)")
    p.add_argument("--baseline", choices=["cg-sense"], default=None, help="CG-SENSE + pixel-wise fit instead of PINQI")
    p.add_argument("--coil-maps", choices=["espirit", "walsh", "inati"], default="espirit",
                   help="estimator of the coil maps from the longest delay's centre lines (Walsh when too few for ESPIRiT)")
    p.add_argument("--times", type=float, nargs="+", default=None, help="saturation times [s], overriding the file's")
    p.add_argument("--prior-strength", type=_prior_strength, default="auto",
                   help="factor on the learned priors' weights: 1 as trained, 0 physics only (data consistency "
                        "and fit, P_θ as the starting point); 'auto': per slice the largest of 1, 0.5, 0.25 whose "
                        "maps fit the data within 15 %% of the physics-only misfit, else 0; then, when the file has "
                        "noise scans, the maps fitted to the k-space until their misfit reaches the noise level "
                        "(pinqi/model_based.py; fixed strengths skip that fit)")
    p.add_argument("--no-progress", action="store_true")


def _voxel_mm(result: T1Reconstruction) -> tuple[float, float, float]:
    fov = result.header.get("fov_mm")
    ny, nx = result.r1.shape[-2:]
    if fov is None or len(fov) != 3 or not all(float(v) > 0 for v in fov):
        return 1.0, 1.0, 1.0
    return float(fov[0]) / nx, float(fov[1]) / ny, float(fov[2])


def _volume(maps: torch.Tensor) -> np.ndarray:
    """(S, Y, X) -> (X, Y, S)."""
    import numpy as np

    return np.ascontiguousarray(maps.numpy().transpose(2, 1, 0))


def _overview(path: Path, result: T1Reconstruction, fmt: str) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(4, result.r1.shape[0])
    fig, axes = plt.subplots(n, 2, figsize=(6.4, 3.0 * n), squeeze=False, layout="constrained")
    m0 = result.m0.abs()
    for s in range(n):
        inside = result.object_mask[s].numpy()
        t1 = np.where(inside, result.t1[s].numpy(), np.nan)
        mag = np.where(inside, m0[s].numpy(), np.nan)
        for ax, img, label, vmax in ((axes[s, 0], t1, "T1 [s]", 3.0), (axes[s, 1], mag, "|M0| [a.u.]", np.nanpercentile(mag, 99))):
            im = ax.imshow(img, cmap="viridis" if label.startswith("T1") else "gray", vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, label=label)
        axes[s, 0].set_ylabel(f"slice {s}")
    fig.suptitle(f"{result.method}: {result.header.get('source', '')}", fontsize=8)
    fig.savefig(path, dpi=100, format=fmt)
    plt.close(fig)


def run_reconstruct(args: argparse.Namespace) -> list[Path]:
    """Run ``pinqi reconstruct``; returns the written files."""
    import h5py

    from ..io import read_raw
    from ..io.outputs import OutputSet, check_output_folder, write_json, write_nifti
    from ..reconstruction import reconstruct

    check_output_folder(args.out)
    raw = read_raw(args.raw, times=args.times)
    model = None
    if args.baseline is None:
        from ..training import load_pinqi

        model = load_pinqi(args.checkpoint)

    def progress(done: int, total: int) -> None:
        if not args.no_progress:
            print(f"slice {done}/{total}", file=sys.stderr, flush=True)

    result = reconstruct(raw, model, baseline=args.baseline, coil_method=args.coil_maps, progress=progress,
                         prior_strength=args.prior_strength)
    stem = Path(args.raw).name.split(".")[0]
    voxel = _voxel_mm(result)
    common = {
        "EstimationMethod": f"{result.method} (pinqi); coil maps: {result.header.get('coil_maps', args.coil_maps)}",
        "SaturationTimes": [round(float(t), 6) for t in result.times],
        "Model": str(args.checkpoint or "shipped pinqi/weights/pinqi_t1.pt") if args.baseline is None else None,
        "PriorStrength": result.header.get("prior_strength") if args.baseline is None else None,
        "ModelBasedFit": result.header.get("model_based_fit") if args.baseline is None else None,
        "BasedOn": str(args.raw),
        "RawHeader": result.header,
    }
    with OutputSet(args.out) as outputs:
        for name, maps, units in (("T1map", result.t1, "s"), ("M0map", result.m0.abs(), "arbitrary")):
            write_nifti(outputs.reserve(f"{stem}_{name}.nii.gz"), _volume(maps), voxel)
            write_json(outputs.reserve(f"{stem}_{name}.json"), {"Units": units, **common})
        with h5py.File(outputs.reserve(f"{stem}_maps.h5"), "w") as f:
            for key, value in (("m0", result.m0), ("r1", result.r1), ("t1", result.t1), ("csm", result.csm)):
                f.create_dataset(key, data=value.numpy(), compression="gzip")
            f.attrs["saturation_times"] = result.times.numpy()
            f.attrs["method"] = result.method
        for fmt in ("png", "pdf"):
            _overview(outputs.reserve(f"{stem}_overview.{fmt}"), result, fmt)
    print(f"wrote {len(outputs.written)} files to {args.out}")
    return outputs.written
