"""W2Q's tissue calibration at 1 mm away from the literature values and at 4 times the noise
(``python -m benchmarks.w2q_values_native``).

The pure-ROI test of :mod:`benchmarks.w2q_clinical` on the MNI152 template's own 1 mm grid, with
the six named clinical protocols (:data:`benchmarks.w2q_clinical.PROTOCOLS`), physical partial
volumes and unknown scales, run as ``pinqi map`` runs it (:class:`benchmarks.w2q_calibration.
TissueCalibrated`) for three tissue-value sets (the literature values, and the two sets of
:data:`benchmarks.w2q_calibration.OTHER_VALUES`: one at the upper edges of the prior's T2 ranges, one
away from its centre in every value) and two noise levels (0.5 % and 2 % of each contrast's mean
brain signal, Rician). Two settings of the calibration: the pixel size known (1 mm: grey matter
enters through its corner, :mod:`pinqi.w2q.partial_volume`) and unknown (CSF and WM only, grey
matter at the network's level). Each cell: the error of the mean over the protocols, the worst
protocol in brackets [%]. Writes ``benchmarks/results/w2q_values_native.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from benchmarks import w2q_clinical as clinical
from benchmarks.w2q_calibration import OTHER_VALUES, TissueCalibrated
from pinqi.cli.map import SHIPPED_WEIGHTS
from pinqi.w2q.training import load_w2q

RESULTS = Path(__file__).parent / "results" / "w2q_values_native.md"
#: The noise levels (share of each contrast's mean brain signal).
NOISE: tuple[float, ...] = (0.005, 0.02)
#: The reported ROI maps.
KEYS: tuple[str, ...] = ("wm t1", "wm t2", "gm t1", "gm t2")


def value_sets() -> dict[str, dict[str, tuple[float, float, float]]]:
    """``{label: {tissue: (T1 [s], T2 [s], PD)}}``: the literature values and :data:`OTHER_VALUES`."""
    return {"literature (WM 0.85 s / 70 ms, GM 1.30 s / 90 ms)": clinical.LITERATURE, **OTHER_VALUES}


def run(model: torch.nn.Module, image_size: int, n_slices: int, n_protocols: int = len(clinical.PROTOCOLS)
        ) -> dict[str, dict[str, dict]]:
    """``{value set: {f"{setting}, noise {level}": summary}}`` of :func:`benchmarks.w2q_clinical.summarise`
    over the first ``n_protocols`` clinical protocols."""
    settings = {"pixel size known (GM corner)": TissueCalibrated(model, image_size),
                "pixel size unknown (CSF and WM only)": TissueCalibrated(model, image_size, field_of_view=None)}
    out: dict[str, dict[str, dict]] = {}
    for label, values in value_sets().items():
        out[label] = {}
        for noise in NOISE:
            for name, method in settings.items():
                result = clinical.run(method, n_slices, True, values, protocols=clinical.PROTOCOLS[:n_protocols],
                                      size=None, noise=noise)
                out[label][f"{name}, noise {100 * noise:g} %"] = result["summary"]
    return out


def report(results: dict[str, dict[str, dict]], n_slices: int, n_protocols: int = len(clinical.PROTOCOLS)) -> str:
    """The markdown tables of :func:`run`."""
    lines = ["# W2Q tissue calibration at 1 mm: other tissue values, more noise (`python -m benchmarks.w2q_values_native`)",
             "", f"{n_slices} MNI152 test slices at 1 mm (233 × 197), {n_protocols} clinical protocols of "
             "`benchmarks.w2q_clinical`, physical partial volumes, unknown scales, shipped weights through "
             "`pinqi.w2q.volume.map_volume`. Error of the mean ROI value over the protocols [%], worst protocol in "
             "brackets; ROIs of > 95 % of a tissue. See the module docstring.", ""]
    for label, rows in results.items():
        lines += [f"## {label}", "", "| setting | WM T1 | WM T2 | GM T1 | GM T2 | GM/WM PD |", "|---|---|---|---|---|---|"]
        for name, summary in rows.items():
            cells = [f"{summary[k]['error %']:+.1f} ({summary[k]['worst error %']:.1f})" for k in KEYS]
            ratio = summary["gm/wm pd"]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio['error %']:+.1f} ({ratio['worst error %']:.1f}) |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_WEIGHTS)
    parser.add_argument("--n-slices", type=int, default=4)
    parser.add_argument("--n-protocols", type=int, default=len(clinical.PROTOCOLS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("pinqi").setLevel(logging.ERROR)
    model, config, _ = load_w2q(args.checkpoint, require_trained=True)
    results = run(model, config.image_size, args.n_slices, args.n_protocols)
    text = report(results, args.n_slices, args.n_protocols)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return text


if __name__ == "__main__":
    main()
