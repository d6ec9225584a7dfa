"""How far a trained PINQI is from exact scale and phase equivariance.

    python -m benchmarks.equivariance [--checkpoint C] [--samples 4]

For brain test samples at 8x (the model's image size and times, coil maps estimated from the
data) it compares ``PINQI(c·k)`` with ``(c·M0, R1)`` of ``PINQI(k)`` for ``c = α e^{iφ}``:

- scale ``α`` from 1e-6 to 1e6 (φ = 0): exact by construction (the model runs at the data's
  robust scale), so the error is float rounding;
- global phase ``φ`` (α = 1): not exact by construction — the networks see the phase — so this
  measures how well the uniform-phase training taught them to ignore it.

Errors are relative L2 norms inside the brain: ``‖R1(c·k) − R1(k)‖ / ‖R1(k)‖`` and
``‖M0(c·k)/c − M0(k)‖ / ‖M0(k)‖``. Writes ``benchmarks/results/equivariance.md``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from pinqi.training import load_pinqi
from simulation import SaturationRecovery, T1MappingDataset

from .t1_common import markdown_table, write_model_report

RESULTS = Path(__file__).resolve().parent / "results" / "equivariance.md"
SCALES = (1e-6, 1e-3, 1e3, 1e6)
PHASES = tuple(k * math.pi / 4 for k in range(1, 8))


def relative_errors(model, sample: dict[str, torch.Tensor], factor: complex, ref: torch.Tensor) -> tuple[float, float]:
    """(R1 error, M0 error) of PINQI(factor · k) against the reference parameters ``ref`` (1, 3, Y, X)."""
    q = SaturationRecovery(sample["times"])
    with torch.no_grad():
        out = model(sample["kspace"][None] * factor, sample["csm"][None], sample["mask"][None], signal_model=q).final
    inside = sample["brain_mask"]
    r1, r1_ref = out[0, 2][inside], ref[0, 2][inside]
    m0 = torch.complex(out[0, 0], out[0, 1])[inside] / factor
    m0_ref = torch.complex(ref[0, 0], ref[0, 1])[inside]
    return float((r1 - r1_ref).norm() / r1_ref.norm()), float((m0 - m0_ref).norm() / m0_ref.norm())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="PINQI checkpoint (default: the shipped model)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_pinqi(args.checkpoint)
    cfg = model.train_config
    data = T1MappingDataset(source="mni152", split="test", length=args.samples, seed=77, image_size=cfg.image_size,
                            n_coils=8, times=cfg.times, acceleration=8.0, estimated_csm=1.0,
                            calibration_lines=cfg.calibration_lines, csm_method=cfg.csm_method)
    rows = []
    worst = {"scale": [0.0, 0.0], "phase": [0.0, 0.0]}
    for i in range(args.samples):
        s = data[i]
        q = SaturationRecovery(s["times"])
        with torch.no_grad():
            ref = model(s["kspace"][None], s["csm"][None], s["mask"][None], signal_model=q).final
        for kind, factors in (("scale", [complex(a) for a in SCALES]), ("phase", [complex(math.cos(p), math.sin(p)) for p in PHASES])):
            errors = [relative_errors(model, s, c, ref) for c in factors]
            r1, m0 = max(e[0] for e in errors), max(e[1] for e in errors)
            worst[kind] = [max(worst[kind][0], r1), max(worst[kind][1], m0)]
            rows.append({"sample": i, "transform": kind, "max R1 rel. error": f"{r1:.2e}", "max M0 rel. error": f"{m0:.2e}"})
            print(rows[-1])
    summary = [
        f"- scale α ∈ {list(SCALES)}: worst R1 {worst['scale'][0]:.1e}, M0 {worst['scale'][1]:.1e} (target < 1e-3)",
        f"- global phase φ = kπ/4, k = 1..7: worst R1 {worst['phase'][0]:.1e}, M0 {worst['phase'][1]:.1e}",
    ]
    print("\n".join(summary))
    if args.no_write:
        return
    write_model_report(
        RESULTS, "Scale and phase equivariance of a trained PINQI", "benchmarks.equivariance", args.checkpoint,
        f"; {args.samples} MNI152 test slices at {cfg.image_size}², 8 coils, 8x, coil maps estimated (ESPIRiT); one thread.",
        [("Worst case", "\n".join(summary)), ("Per sample", markdown_table(rows))],
    )


if __name__ == "__main__":
    main()
