"""What limits PINQI on the nine-tube phantom at 64² and 8x: ``python -m benchmarks.phantom_limits``.

``benchmarks.real_data`` reads the phantom through ISMRMRD files with correlated coil noise and
coil maps estimated by ESPIRiT, and PINQI misses its 35 ms target at 64², 8x (it meets it at 192²).
This script removes one imperfection at a time on the same phantom (:func:`simulation.tube_phantom.tube_phantom`,
8 simulated coils, variable-density 8x sampling plus 16 calibration lines in the longest delay;
library path, no files): coil maps true or estimated (:func:`pinqi.reconstruction.coil_maps_from_data`),
noise 0 or σ = 0.01, for PINQI with the learned priors at full strength (1) and physics only (0),
and CG-SENSE + fit. If the error stays far above 35 ms with true maps and no noise, the limit is
what 8x leaves of a 64² phantom for this model, not the raw-data path.

Also the *model-based fit* (:func:`pinqi.model_based.model_based_fit`): the maps fitted directly to
the k-space, ``min_p ||A q(p) − k||²`` over (Re M0, Im M0, ln R1) by L-BFGS from physics-only
PINQI's maps, either run for ``iterations`` (to convergence) or stopped by the discrepancy
principle (once the misfit reaches the expected noise energy, σ known here). ``--brain N`` runs
PINQI (automatic prior strength), the unstopped fit from it and ``pinqi reconstruct``'s path (the
stopped fit, :func:`pinqi.prior_strength.reconstruct_slice` with the noise level) on N MNI152 test
slices at 8x with estimated maps, reporting T1 nRMSE: what the fit does where the priors are right.

Prints a markdown table (tube T1 RMS [ms], mean and range over ``--seeds`` sampling patterns and
phantom phases); one thread, about a minute.
"""

from __future__ import annotations

import argparse

import torch

from operators import MultiCoilCartesianOp, simulate_coil_maps, variable_density_mask
from operators.sampling import with_calibration_lines
from pinqi.baselines.classical import cg_sense_fit
from pinqi.evaluation import t1_metrics
from pinqi.model_based import model_based_fit
from pinqi.prior_strength import reconstruct_slice
from pinqi.reconstruction import coil_maps_from_data
from pinqi.training import load_pinqi
from simulation import SaturationRecovery, T1MappingDataset
from simulation.tube_phantom import tube_phantom

from .real_data import calibration_lines, tube_errors


def run(size: int = 64, acceleration: float = 8.0, seeds: int = 4,
        iterations: int = 300) -> dict[tuple[str, str, float], list[float]]:
    """``{(method, maps, noise): [RMS per seed]}``; ``iterations`` of the model-based fits."""
    torch.set_num_threads(1)
    model = load_pinqi()
    times = torch.tensor(model.train_config.times)
    q = SaturationRecovery(times)
    rows: dict[tuple[str, str, float], list[float]] = {}
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        phantom = tube_phantom(size, generator=g)
        csm = simulate_coil_maps(8, (size, size), object_mask=phantom.labels > 0, generator=g)[None]
        mask = variable_density_mask(len(times), (size, size), acceleration=acceleration, generator=g)
        mask = with_calibration_lines(mask, int(times.argmax()), 16)[None]
        clean = MultiCoilCartesianOp(csm, mask)(q(phantom.params[None]))
        for noise in (0.0, 0.01):
            k = clean + noise * torch.randn(clean.shape, dtype=clean.dtype, generator=g) * mask[:, :, None]
            estimated, _ = coil_maps_from_data(k, mask, times)
            for maps_name, maps in (("true", csm), ("estimated", estimated)):
                with torch.no_grad():
                    for strength in (1.0, 0.0):
                        p = model(k, maps, mask, prior_strength=strength).final
                        rows.setdefault((f"PINQI, prior strength {strength:g}", maps_name, noise), []).append(
                            tube_errors(1 / p[0, 2].clamp_min(1e-3), phantom.rois)[0])
                    op = MultiCoilCartesianOp(maps, mask)  # p: physics-only PINQI (the last strength)
                    fitted = model_based_fit(k, op, q, p, None, mask, iterations)[0]
                    rows.setdefault(("PINQI physics-only + model-based fit (300 L-BFGS iterations)", maps_name, noise),
                                    []).append(tube_errors(1 / fitted[0, 2].clamp_min(1e-3), phantom.rois)[0])
                    if noise > 0:
                        stopped = model_based_fit(k, op, q, p, noise / 2**0.5, mask, iterations)[0]
                        rows.setdefault(("PINQI physics-only + model-based fit (stopped at the noise level)", maps_name,
                                         noise), []).append(tube_errors(1 / stopped[0, 2].clamp_min(1e-3), phantom.rois)[0])
                p = cg_sense_fit(k, maps, mask, q).params
                rows.setdefault(("CG-SENSE + fit", maps_name, noise), []).append(
                    tube_errors(1 / p[0, 2].clamp_min(1e-3), phantom.rois)[0])
    return rows


def brain(n: int, acceleration: float = 8.0) -> dict[str, list[float]]:
    """T1 nRMSE per MNI152 test slice (8 coils, estimated maps, the benchmark's seed) of PINQI with the
    automatic prior strength and of the two model-based fits started from it."""
    torch.set_num_threads(1)
    model = load_pinqi()
    config = model.train_config
    q = SaturationRecovery(torch.tensor(config.times))
    data = T1MappingDataset(source="mni152", split="test", length=n, seed=2024, image_size=config.image_size, n_coils=8,
                            times=config.times, acceleration=acceleration, estimated_csm=1.0,
                            calibration_lines=calibration_lines(config.image_size), csm_method="espirit")
    out: dict[str, list[float]] = {}
    for i in range(n):
        s = {key: value[None] for key, value in data[i].items()}
        with torch.no_grad():
            p = reconstruct_slice(model, s["kspace"], s["csm"], s["mask"], q)[0]
            stopped = reconstruct_slice(model, s["kspace"], s["csm"], s["mask"], q, noise_sigma=float(s["sigma"]))[0]
        op = MultiCoilCartesianOp(s["csm"], s["mask"])
        maps = {"PINQI (automatic prior strength)": p,
                "+ model-based fit (300 L-BFGS iterations)": model_based_fit(s["kspace"], op, q, p, None, s["mask"])[0],
                "+ model-based fit (stopped at the noise level; pinqi reconstruct)": stopped}
        for name, m in maps.items():
            out.setdefault(name, []).append(float(t1_metrics(m, s["params"], s["brain_mask"])["nrmse"].mean()))
    return out


def table(rows: dict[tuple[str, str, float], list[float]]) -> str:
    lines = ["| method | coil maps | noise σ | tube T1 RMS [ms], mean | range |", "|---|---|---|---|---|"]
    for (method, maps, noise), values in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "true", kv[0][2])):
        lines.append(f"| {method} | {maps} | {noise:g} | {sum(values) / len(values):.1f} | "
                     f"{min(values):.1f}–{max(values):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--acceleration", type=float, default=8.0)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--brain", type=int, default=0, help="also N brain slices (T1 nRMSE)")
    args = parser.parse_args(argv)
    text = table(run(args.size, args.acceleration, args.seeds))
    if args.brain:
        values = brain(args.brain, args.acceleration)
        text += "\n\n| brain, 8x, estimated maps | T1 nRMSE, mean | range |\n|---|---|---|\n" + "\n".join(
            f"| {name} | {sum(v) / len(v):.4f} | {min(v):.4f}–{max(v):.4f} |" for name, v in values.items())
    print(text)
    return text


if __name__ == "__main__":
    main()
