"""Solver benchmark: data consistency (implicit vs unrolled) and the pixel-wise nonlinear fit.

``python -m benchmarks.solvers [--quick] [--only dc|fit] [--out FILE]`` prints both tables and
writes ``benchmarks/results/solvers.md``. The halves live in :mod:`benchmarks.solvers_dc` and
:mod:`benchmarks.solvers_fit`; every figure is a ratio measured within one run.
"""

from __future__ import annotations

import argparse
import platform
from datetime import datetime
from pathlib import Path

import torch

from . import solvers_dc, solvers_fit
from .t1_common import write_results_text

RESULTS = Path(__file__).resolve().parent / "results" / "solvers.md"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, seconds)")
    parser.add_argument("--only", choices=["dc", "fit"], default=None)
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS}; none with --quick)")
    args = parser.parse_args(argv)
    sections = [
        f"# Solver benchmark ({datetime.now().isoformat(timespec='seconds')}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()})",
        "",
        f"Command: `python -m benchmarks.solvers{' --quick' if args.quick else ''}"
        f"{' --only ' + args.only if args.only else ''}`",
        "",
    ]
    if args.only in (None, "dc"):
        sections += ["## data_consistency", "", solvers_dc.format_table(solvers_dc.run(quick=args.quick)), ""]
    if args.only in (None, "fit"):
        sections += ["## nonlinear_fit", "", solvers_fit.format_table(solvers_fit.run(quick=args.quick)), ""]
    text = "\n".join(sections)
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        write_results_text(out, text)
    return text


if __name__ == "__main__":
    main()
