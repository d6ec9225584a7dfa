"""What limits PINQI on the nine-tube phantom at 64² and 8x: ``python -m benchmarks.phantom_limits``.

``benchmarks.real_data`` reads the phantom through ISMRMRD files with correlated coil noise and
coil maps estimated by ESPIRiT, and PINQI misses its 35 ms target at 64², 8x (it meets it at 192²).
This script removes one imperfection at a time on the same phantom (:func:`simulation.tube_phantom.tube_phantom`,
8 simulated coils, variable-density 8x sampling plus 16 calibration lines in the longest delay;
library path, no files): coil maps true or estimated (:func:`pinqi.reconstruction.coil_maps_from_data`),
noise 0 or σ = 0.01, for PINQI with the learned priors at full strength (1) and physics only (0),
and CG-SENSE + fit. If the error stays far above 35 ms with true maps and no noise, the limit is
what 8x leaves of a 64² phantom for this model, not the raw-data path.

Prints a markdown table (tube T1 RMS [ms], mean and range over ``--seeds`` sampling patterns and
phantom phases); one thread, about a minute.
"""

from __future__ import annotations

import argparse

import torch

from operators import MultiCoilCartesianOp, simulate_coil_maps, variable_density_mask
from operators.sampling import with_calibration_lines
from pinqi.baselines.classical import cg_sense_fit
from pinqi.reconstruction import coil_maps_from_data
from pinqi.training import load_pinqi
from simulation import SaturationRecovery
from simulation.tube_phantom import tube_phantom

from .real_data import tube_errors


def run(size: int = 64, acceleration: float = 8.0, seeds: int = 4) -> dict[tuple[str, str, float], list[float]]:
    """``{(method, maps, noise): [RMS per seed]}``."""
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
                p = cg_sense_fit(k, maps, mask, q).params
                rows.setdefault(("CG-SENSE + fit", maps_name, noise), []).append(
                    tube_errors(1 / p[0, 2].clamp_min(1e-3), phantom.rois)[0])
    return rows


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
    args = parser.parse_args(argv)
    text = table(run(args.size, args.acceleration, args.seeds))
    print(text)
    return text


if __name__ == "__main__":
    main()
