"""Evaluation of T1-mapping methods on a fixed HDF5 test set: metrics per acceleration and figures.

Metrics are computed inside the brain mask in the T1 domain (seconds), T1 = 1/R1 with R1 clamped
to [1/20, 20] 1/s so that a wrong sign or a zero cannot produce infinities.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import mae, nrmse, psnr, ssim

Method = Callable[[dict[str, torch.Tensor]], torch.Tensor]
"""A method maps a batch (kspace, csm, mask, times, ...) to parameters (B, 3, Y, X) = (Re M0, Im M0, R1)."""

R1_CLAMP = (1.0 / 20.0, 20.0)


def t1_from_r1(r1: torch.Tensor) -> torch.Tensor:
    """T1 [s] = 1/R1 with R1 clamped to ``R1_CLAMP``."""
    return 1.0 / r1.clamp(*R1_CLAMP)


def t1_metrics(pred_params: torch.Tensor, target_params: torch.Tensor, brain_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """nRMSE, MAE [s], PSNR [dB] and SSIM of T1 per sample.

    Parameters
    ----------
    pred_params, target_params
        ``(B, 3, Y, X)``: (Re M0, Im M0, R1 [1/s]).
    brain_mask
        ``(B, Y, X)`` bool.
    """
    pred = t1_from_r1(pred_params[:, 2])
    target = t1_from_r1(target_params[:, 2])
    return {
        "nrmse": nrmse(pred, target, brain_mask),
        "mae": mae(pred, target, brain_mask),
        "psnr": psnr(pred, target, brain_mask),
        "ssim": ssim(pred, target, brain_mask),
    }


def evaluate_method(
    method: Method,
    batches: list[dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """Run ``method`` on every batch; metrics per sample grouped by acceleration.

    Returns
    -------
    ``{"per_acceleration": {acc: {metric: {"mean", "sd", "values"}}}, "seconds_per_slice": float,
    "predictions": list of (B, 3, Y, X) tensors}``.
    """
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    predictions = []
    elapsed = 0.0
    n_slices = 0
    for batch in batches:
        started = time.perf_counter()
        with torch.no_grad():
            params = method(batch)
        elapsed += time.perf_counter() - started
        n_slices += params.shape[0]
        predictions.append(params.detach().cpu())
        metrics = t1_metrics(params.detach().cpu(), batch["params"].cpu(), batch["brain_mask"].cpu())
        for i, acc in enumerate(batch["acceleration"].tolist()):
            key = f"{acc:g}"
            for name, values in metrics.items():
                grouped[key][name].append(float(values[i]))
    summary = {
        acc: {
            name: {"mean": float(np.mean(vals)), "sd": float(np.std(vals)), "values": vals}
            for name, vals in by_metric.items()
        }
        for acc, by_metric in sorted(grouped.items(), key=lambda kv: float(kv[0]))
    }
    return {"per_acceleration": summary, "seconds_per_slice": elapsed / max(1, n_slices), "predictions": predictions}


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def save_map_figure(
    path: str | Path,
    target: torch.Tensor,
    predictions: dict[str, torch.Tensor],
    brain_mask: torch.Tensor,
    title: str = "",
) -> None:
    """|M0| and T1 maps with their error maps for one slice (like the PINQI paper's Fig. 4).

    Written straight to ``path`` (its suffix names the format): pass a name reserved in a
    :class:`pinqi.io.outputs.OutputSet` to have it appear only with the other outputs.

    Parameters
    ----------
    target
        ``(3, Y, X)`` ground-truth parameters.
    predictions
        Method name -> ``(3, Y, X)`` parameters.
    brain_mask
        ``(Y, X)`` bool.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = brain_mask.cpu().numpy()

    def maps(params: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        m0 = np.where(mask, torch.complex(params[0], params[1]).abs().cpu().numpy(), 0.0)
        t1 = np.where(mask, t1_from_r1(params[2]).cpu().numpy(), 0.0)
        return m0, t1

    true_m0, true_t1 = maps(target)
    columns = [("ground truth", target)] + list(predictions.items())
    fig, axes = plt.subplots(4, len(columns), figsize=(2.4 * len(columns), 9.6), squeeze=False)
    m0_max = float(np.percentile(true_m0[mask], 99)) if mask.any() else 1.0
    for col, (name, params) in enumerate(columns):
        m0, t1 = maps(params)
        panels = [
            (m0, "gray", 0, m0_max, "|M0|"),
            (np.abs(m0 - true_m0), "magma", 0, 0.2 * m0_max, "|Δ M0|"),
            (t1, "viridis", 0, 3.0, "T1 [s]"),
            (np.abs(t1 - true_t1), "magma", 0, 0.5, "|Δ T1| [s]"),
        ]
        for row, (image, cmap, vmin, vmax, label) in enumerate(panels):
            ax = axes[row, col]
            shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == len(columns) - 1:
                fig.colorbar(shown, ax=ax, fraction=0.046, label=label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        fig.savefig(path, dpi=110, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
