"""PINQI off its training data: a nine-tube phantom through ISMRMRD files, and brains with estimated coil maps.

    python -m benchmarks.real_data [--checkpoint C] [--sizes 64 192] [--brain-samples 16] [--quick]

Writes ``benchmarks/results/real_data.md`` (``--quick``: a smaller run, printed only).

Phantom
    :func:`simulation.tube_phantom.tube_phantom` (the PINQI paper's Table I T1s, a random M0 phase),
    written by :func:`pinqi.io.examples.write_example_scan`: saturation recovery at the model's
    times, 8 simulated coils, correlated coil noise (its noise-only scans in the file), a global
    intensity factor 1e3·e^{0.7i}, twofold readout oversampling, 16 (64²) or 24 (192²)
    calibration lines in the longest delay. The file is written with the ``ismrmrd`` package and
    read back with :func:`pinqi.io.read_raw`, which prewhitens and removes the oversampling; coil
    maps are then estimated from the data by ESPIRiT
    (:func:`pinqi.reconstruction.coil_maps_from_data`), as for a real scan. Reported: the RMS over
    the nine tubes of the error of the ROI-mean T1 [ms], for PINQI and CG-SENSE + pixel-wise fit
    on the same file (fully sampled, the latter *is* the pixel-wise fit of the data). "PINQI" is
    what ``pinqi reconstruct`` does by default: the prior strength chosen per slice by the
    discrepancy rule of :mod:`pinqi.prior_strength`, then the model-based fit stopped at the noise
    level of the prewhitened data (:mod:`pinqi.model_based`); beside it PINQI at fixed strengths, 1
    (the priors as trained) and 0 (physics only: data consistency and fit alternate with the
    learned λ_q, P_θ only gives the starting point), without that fit. In the brain rows "PINQI"
    is told the simulation's noise level for that fit (the files' whitened noise has unit variance).
Brain
    The MNI152 test split at the model's image size, 8 coils, 8x plus the same calibration lines,
    coil maps estimated from each sample's own calibration lines (ESPIRiT) and, for comparison,
    the true maps. Reported: T1 nRMSE, MAE [s], PSNR [dB] and SSIM inside the brain, for PINQI,
    CG-SENSE + fit and the learned baselines trained on PINQI's ``ship`` data at its budget
    (``python -m benchmarks.t1_mapping --preset ship --train-only DOPAMINE --out
    benchmarks/weights/ship``; DOPAMINE's checkpoint is committed there, MANTIS trains in minutes
    into ``runs/``).

Targets (issue #14, DESIGN.md): fully sampled, PINQI <= 1.2x the pixel fit; at 8x, PINQI's phantom
RMS <= 35 ms and below CG-SENSE + fit; brain T1 nRMSE with estimated maps <= 1.1x that with the
true maps, >= 40 % below CG-SENSE + fit and >= 20 % below the best learned baseline.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pinqi.baselines.classical import cg_sense_fit
from pinqi.evaluation import t1_metrics
from pinqi.io import read_raw
from pinqi.io.examples import write_example_scan
from pinqi.model import PINQI
from pinqi.prior_strength import reconstruct_slice
from pinqi.reconstruction import reconstruct
from pinqi.training import load_pinqi
from simulation import SaturationRecovery, T1MappingDataset
from simulation.tube_phantom import TABLE_I_T1

from .t1_common import ROOT, get_preset, markdown_table, write_model_report
from .t1_methods import BASELINES, CHECKPOINT, Predict, load_learned

RESULTS = Path(__file__).resolve().parent / "results" / "real_data.md"
LEARNED_DIRS = (ROOT / "benchmarks" / "weights" / "ship", ROOT / "runs" / "benchmarks" / "t1_mapping-ship")
N_COILS = 8
#: PINQI at fixed prior strengths, beside the default (``"auto"``, :mod:`pinqi.prior_strength`):
#: as trained (1) and physics only (0).
FIXED_STRENGTHS = {"PINQI, prior strength 1": 1.0, "PINQI, prior strength 0": 0.0}


def calibration_lines(size: int) -> int:
    """ACS lines in the longest delay: 16 at 64², 24 at 192² (a clinical parallel-imaging calibration)."""
    return max(16, size // 8)


def tube_errors(t1: torch.Tensor, rois: torch.Tensor) -> tuple[float, list[float]]:
    """RMS over tubes of the ROI-mean T1 error [ms], and the ROI means [s]."""
    means = torch.stack([t1[roi].mean() for roi in rois]).double()
    rms = float((means - torch.tensor(TABLE_I_T1, dtype=torch.float64)).square().mean().sqrt()) * 1e3
    return rms, [round(float(v), 3) for v in means]


def phantom_rows(model: PINQI, sizes: list[int], accelerations: list[float], times: torch.Tensor) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for acc in accelerations:
                scan = write_example_scan(Path(tmp) / f"phantom_{size}_{acc:g}x.h5", "phantom", size=size,
                                          n_coils=N_COILS, times=tuple(times.tolist()), acceleration=acc,
                                          calibration_lines=calibration_lines(size), seed=11 + size)
                raw = read_raw(scan.path)
                for name, kwargs in (("PINQI", {"model": model}), *((label, {"model": model, "prior_strength": value})
                                                                    for label, value in FIXED_STRENGTHS.items()),
                                     ("CG-SENSE + fit", {"baseline": "cg-sense"})):
                    started = time.perf_counter()
                    result = reconstruct(raw, **kwargs)
                    rms, means = tube_errors(result.t1[0], scan.rois)
                    rows.append({"size": size, "acceleration": f"{acc:g}x", "method": name, "tube T1 RMS [ms]": f"{rms:.1f}",
                                 "seconds": f"{time.perf_counter() - started:.1f}", "tube means [s]": " ".join(f"{m:.3f}" for m in means)})
                    print(rows[-1])
    return rows


def learned_baselines(folders: list[Path]) -> dict[str, tuple[Predict, int]]:
    """The learned baselines trained by ``python -m benchmarks.t1_mapping --preset ship --train-only M``.

    Each folder is searched for ``<method>/checkpoint.pt`` (the first folder holding a method
    wins). Returns the method's predictor and the optimiser steps its checkpoint has seen.
    """
    preset = get_preset("ship")
    found: dict[str, tuple[Predict, int]] = {}
    for folder in folders:
        for name, spec in BASELINES.items():
            directory = folder / name.lower()
            if name not in found and (directory / CHECKPOINT).is_file():
                steps = sum(1 for line in (directory / "train_log.jsonl").read_text().splitlines() if line.strip())
                found[name] = (load_learned(spec(), preset, directory), steps)
    return found


def brain_rows(
    model: PINQI, n: int, acceleration: float, learned: dict[str, tuple[Predict, int]] | None = None
) -> list[dict[str, Any]]:
    config = model.train_config
    data = T1MappingDataset(source="mni152", split="test", length=n, seed=2024, image_size=config.image_size,
                            n_coils=N_COILS, times=config.times, acceleration=acceleration, estimated_csm=1.0,
                            calibration_lines=calibration_lines(config.image_size), csm_method="espirit")
    q = SaturationRecovery(torch.tensor(config.times))
    results: dict[str, list[dict[str, torch.Tensor]]] = {}
    for i in range(n):
        s = {k: v[None] for k, v in data[i].items()}
        for maps in ("estimated", "true"):
            csm = s["csm"] if maps == "estimated" else s["csm_true"]
            with torch.no_grad():
                # as pinqi reconstruct: with the noise level known (here the simulation's), the model-based fit
                outputs = {"PINQI": reconstruct_slice(model, s["kspace"], csm, s["mask"], q,
                                                      noise_sigma=float(s["sigma"]))[0]}
                for label, value in FIXED_STRENGTHS.items():
                    outputs[label] = model(s["kspace"], csm, s["mask"], signal_model=q, prior_strength=value).final
            classical = cg_sense_fit(s["kspace"], csm, s["mask"], q, solver="gauss-newton").params
            outputs["CG-SENSE + fit"] = classical
            for name, (predict, steps) in (learned or {}).items():
                with torch.no_grad():
                    outputs[f"{name} ({steps} steps)"] = predict({"kspace": s["kspace"], "csm": csm, "mask": s["mask"]})
            for name, params in outputs.items():
                results.setdefault(f"{name}|{maps}", []).append(t1_metrics(params, s["params"], s["brain_mask"]))
    rows = []
    for key, values in results.items():
        name, maps = key.split("|")
        mean = {m: float(torch.cat([v[m].reshape(-1) for v in values]).mean()) for m in values[0]}
        rows.append({"method": name, "coil maps": maps, "T1 nRMSE": f"{mean['nrmse']:.4f}",
                     "T1 MAE [s]": f"{mean['mae']:.4f}", "T1 PSNR [dB]": f"{mean['psnr']:.2f}",
                     "T1 SSIM": f"{mean['ssim']:.4f}"})
    return rows


def verdicts(phantom: list[dict[str, Any]], brain: list[dict[str, Any]], model_size: int) -> list[str]:
    """The issue's targets, checked on the figures just measured."""
    def rms(size: int, acc: str, method: str) -> float:
        return next(float(r["tube T1 RMS [ms]"]) for r in phantom if r["size"] == size and r["acceleration"] == acc
                    and r["method"] == method)

    def nrmse(method: str, maps: str) -> float:
        return next(float(r["T1 nRMSE"]) for r in brain if r["method"] == method and r["coil maps"] == maps)

    lines = []
    for size in sorted({r["size"] for r in phantom}):
        accs = {r["acceleration"] for r in phantom if r["size"] == size}
        if "1x" in accs:
            ratio = rms(size, "1x", "PINQI") / rms(size, "1x", "CG-SENSE + fit")
            lines.append(f"- {size}², fully sampled: PINQI / pixel fit = {ratio:.2f} (target <= 1.2): {'met' if ratio <= 1.2 else 'NOT met'}")
        if "8x" in accs:
            p, c = rms(size, "8x", "PINQI"), rms(size, "8x", "CG-SENSE + fit")
            ok = p <= 35 and p < c
            lines.append(f"- {size}², 8x: PINQI {p:.1f} ms vs CG-SENSE + fit {c:.1f} ms (target <= 35 ms and below): {'met' if ok else 'NOT met'}")
    if brain:
        est, true, cg = nrmse("PINQI", "estimated"), nrmse("PINQI", "true"), nrmse("CG-SENSE + fit", "estimated")
        lines.append(f"- brain {model_size}², 8x: estimated / true maps = {est / true:.3f} (target <= 1.1): {'met' if est <= 1.1 * true else 'NOT met'}")
        lines.append(f"- brain {model_size}², 8x: PINQI {100 * (1 - est / cg):.0f} % below CG-SENSE + fit (target >= 40 %): "
                     f"{'met' if est <= 0.6 * cg else 'NOT met'}")
        learned = [r for r in brain if r["method"].split(" (")[0] in BASELINES and r["coil maps"] == "estimated"]
        if learned:
            best = min(learned, key=lambda r: float(r["T1 nRMSE"]))
            below = 1 - est / float(best["T1 nRMSE"])
            lines.append(f"- brain {model_size}², 8x: PINQI {100 * below:.0f} % below the best learned baseline, "
                         f"{best['method']} (target >= 20 %): {'met' if below >= 0.2 else 'NOT met'}")
        else:
            lines.append("- brain, 8x, against the best learned baseline (target >= 20 % below): not measured "
                         "(no trained baseline; see --learned)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="PINQI checkpoint (default: the shipped model)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="phantom sizes (default: the model's and 192)")
    parser.add_argument("--accelerations", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    parser.add_argument("--brain-samples", type=int, default=16)
    parser.add_argument("--learned", type=Path, nargs="*", default=list(LEARNED_DIRS),
                        help="folders of learned baselines trained on the ship preset (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="small run, nothing written")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_pinqi(args.checkpoint)
    config = model.train_config
    times = torch.tensor(config.times)
    sizes = args.sizes or ([config.image_size] if args.quick else sorted({config.image_size, 192}))
    accelerations = [1.0, 8.0] if args.quick else args.accelerations
    n_brain = 2 if args.quick else args.brain_samples
    phantom = phantom_rows(model, sizes, accelerations, times)
    brain = brain_rows(model, n_brain, 8.0, learned_baselines(args.learned))
    for row in brain:
        print(row)
    checks = verdicts(phantom, brain, config.image_size)
    print("\n".join(checks))
    if args.quick:
        return
    write_model_report(
        RESULTS, "PINQI off its training data", "benchmarks.real_data", args.checkpoint,
        f" (trained at {config.image_size}², {config.n_coils} coils, times {list(config.times)} s). One thread.",
        [("Targets", "\n".join(checks)),
         ("Phantom (nine tubes, Table I T1s; ISMRMRD round trip, prewhitening, oversampling removal, estimated coil maps)",
          markdown_table(phantom)),
         (f"Brain test set at 8x ({n_brain} MNI152 test slices, {N_COILS} coils)", markdown_table(brain))],
    )


if __name__ == "__main__":
    main()
