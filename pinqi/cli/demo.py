"""``pinqi demo``: the main job with the shipped model, on raw files a scanner could have written.

1. Writes ISMRMRD files (:func:`pinqi.io.examples.write_example_scan`) of MNI152 brain slices at
   4x, 6x and 8x and of the nine-tube phantom (fully sampled and 8x), as a scanner delivers them:
   correlated coil noise with noise scans, oversampled readout, calibration lines, arbitrary
   intensity unit and phase.
2. Reads each back (:func:`pinqi.io.read_raw`) and reconstructs it with the shipped PINQI model and
   with CG-SENSE + pixel-wise fit, coil maps estimated from the data (as ``pinqi reconstruct``).
3. Prints T1 nRMSE inside the brain (mean over slices) and the phantom's tube T1 RMS error, and
   writes ``demo_maps.png`` / ``.pdf``.

``pinqi demo --train`` instead simulates a test set, trains the cpu preset briefly and evaluates
it (the short run shows the machinery, not a good model).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["add_demo", "run_demo"]

ACCELERATIONS = (4.0, 6.0, 8.0)
BRAIN_SLICES = 3


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="reconstruct simulated raw files with the shipped PINQI model and CG-SENSE + fit",
        description=__doc__, epilog="example: pinqi demo --out runs/demo",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("runs") / "demo", help="output folder")
    p.add_argument("--checkpoint", type=Path, default=None, help="PINQI weights (default: the shipped model)")
    p.add_argument("--train", action="store_true", help="the old demo: train the cpu preset briefly, then evaluate")
    p.add_argument("--steps", type=int, default=None, help="--train only: training steps (default: a short run)")


def _scores(result: Any, truth: Any) -> str:
    import torch

    from ..metrics import nrmse
    from ..evaluation import t1_from_r1

    t1, true_t1 = result.t1[0], t1_from_r1(truth.params[2])
    rois = truth.rois
    if rois is None:
        return f"{float(nrmse(t1, true_t1, truth.mask)):.4f}"
    means = torch.stack([t1[roi].mean() for roi in rois]).double()
    return f"{float((means - torch.stack([true_t1[roi].mean() for roi in rois]).double()).square().mean().sqrt()) * 1e3:.1f} ms"


def _figure(path: Path, panels: list[tuple[str, Any, Any]], fmt: str) -> None:
    """Rows: one case each; columns: truth, then each method's T1 and its error (background masked)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..evaluation import t1_from_r1
    from ..metrics import nrmse, ssim

    methods = list(panels[0][2])
    fig, axes = plt.subplots(len(panels), 1 + 2 * len(methods), figsize=(2.4 * (1 + 2 * len(methods)), 2.5 * len(panels)),
                             squeeze=False, layout="constrained")
    for row, (label, truth, results) in enumerate(panels):
        true_t1, inside = t1_from_r1(truth.params[2]), truth.mask
        show = [("truth T1 [s]", true_t1, "viridis", (0, 3))]
        for name in methods:
            t1 = results[name].t1[0]
            score = f"nRMSE {float(nrmse(t1, true_t1, inside)):.3f}, SSIM {float(ssim(t1, true_t1, inside)):.2f}"
            show += [(f"{name} T1 [s]", t1, "viridis", (0, 3)), (f"|error| [s]\n{score}", (t1 - true_t1).abs(), "magma", (0, 0.5))]
        for col, (title, img, cmap, (lo, hi)) in enumerate(show):
            ax = axes[row, col]
            im = ax.imshow(np.where(inside.numpy(), img.numpy(), np.nan), cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046)
        axes[row, 0].set_ylabel(label)
    fig.savefig(path, dpi=110, format=fmt)
    plt.close(fig)


def run_demo(args: argparse.Namespace) -> None:
    if args.train:
        from .commands import demo as train_demo

        train_demo(args)
        return
    from ..io import read_raw
    from ..io.examples import write_example_scan
    from ..io.outputs import OutputSet, check_output_folder
    from ..reconstruction import reconstruct
    from ..training import load_pinqi
    from .tables import print_table

    started = time.perf_counter()
    out = check_output_folder(args.out)
    raw_dir = check_output_folder(out / "raw")
    model = load_pinqi(args.checkpoint)
    size, times = model.train_config.image_size, model.train_config.times
    cases: list[tuple[str, str, float, int]] = [("phantom", "phantom", acc, 0) for acc in (1.0, 8.0)]
    cases += [("brain", f"brain {i}", acc, 100 + i) for acc in ACCELERATIONS for i in range(BRAIN_SLICES)]
    print(f"[1/2] writing {len(cases)} ISMRMRD files ({size}², 8 coils) to {raw_dir} ...")
    scans = [(kind, label, acc, write_example_scan(raw_dir / f"{label.replace(' ', '')}_{acc:g}x.h5", kind, size=size,
                                                    times=times, acceleration=acc, seed=seed))
             for kind, label, acc, seed in cases]
    print("[2/2] reconstructing each with PINQI and with CG-SENSE + fit ...")
    rows: dict[tuple[str, str], dict[str, list[str]]] = {}
    figure: list[tuple[str, Any, Any]] = []
    for kind, label, acc, scan in scans:
        raw = read_raw(scan.path)
        results = {"PINQI": reconstruct(raw, model), "CG-SENSE + fit": reconstruct(raw, baseline="cg-sense")}
        for name, result in results.items():
            rows.setdefault((kind, f"{acc:g}x"), {}).setdefault(name, []).append(_scores(result, scan))
        if label in ("phantom", "brain 0") and acc == 8.0:
            figure.append((f"{label}, 8x", scan, results))
    table = []
    for (kind, acc), methods in rows.items():
        row = {"data": kind, "acceleration": acc}
        for name, values in methods.items():
            row[name] = values[0] if kind == "phantom" else f"{sum(float(v) for v in values) / len(values):.4f}"
        table.append(row)
    print("T1 error: brain = nRMSE inside the brain (mean of 3 slices); phantom = RMS over the 9 tubes of the ROI-mean error")
    print_table(table)
    with OutputSet(out) as outputs:
        for fmt in ("png", "pdf"):
            _figure(outputs.reserve(f"demo_maps.{fmt}"), figure, fmt)
    print(f"done in {time.perf_counter() - started:.0f} s; figure: {out / 'demo_maps.png'}")
