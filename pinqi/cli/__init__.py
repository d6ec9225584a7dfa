"""Command-line interface: ``pinqi simulate | train | evaluate | reconstruct | demo | map``.

The parser and :func:`main` live here; the sub-commands in :mod:`pinqi.cli.commands` (PINQI and
the shared ones), :mod:`pinqi.cli.reconstruct`, :mod:`pinqi.cli.demo` and :mod:`pinqi.cli.map`
(W2Q), the markdown tables in :mod:`pinqi.cli.tables`.

How the command answers
-----------------------
- Every failure, argument errors included, prints one line ``pinqi <verb>: error: ...`` on stderr
  and exits with status 2; the traceback only with ``-v`` (before or after the verb, which also
  logs at INFO level). Ctrl-C prints one line and exits with status 130.
- The output folder (``--out``) is checked before any work starts: a path that exists and is not a
  folder, or a folder that cannot be created or written to, is refused.
- Every output of a run is written through :class:`pinqi.io.outputs.OutputSet`: unpredictable
  temporary names created exclusively in the destination folder, renamed only when all are
  complete, none left behind after a failure.
- ``--help`` of each verb shows the defaults and an example.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .checks import acceleration, check_out, describe, non_negative_int, positive_float, positive_int
from .demo import add_demo
from .reconstruct import add_reconstruct

__all__ = ["EXAMPLES", "build_parser", "check_out", "main", "positive_int", "non_negative_int", "positive_float"]

EXAMPLES = {
    "simulate": "pinqi simulate --out runs/data --size 64 --coils 4 --n-per-acceleration 4",
    "train": "pinqi train --preset cpu --out runs/pinqi-cpu      # add --resume to continue",
    "evaluate": "pinqi evaluate runs/pinqi-cpu/checkpoint.pt --data runs/data/test.h5",
    "reconstruct": "pinqi reconstruct scan.h5 --out maps/",
    "demo": "pinqi demo --out runs/demo",
    "map": "pinqi map --t1w sub-01_T1w.nii.gz --t2w sub-01_T2w.nii.gz --out maps/",
}


DEFAULT_RUN_DIR = Path("runs")


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write fixed validation/test sets to HDF5 (or download BrainWeb)")
    p.add_argument("--out", type=Path, default=DEFAULT_RUN_DIR / "data", help="output folder")
    p.add_argument("--anatomy", default="mni152", choices=["mni152", "brainweb", "phantom", "tubes"],
                   help="anatomy source (tubes: the nine-tube T1 phantom, --format ismrmrd only)")
    p.add_argument("--format", default="pinqi-h5", choices=["pinqi-h5", "ismrmrd"],
                   help="pinqi-h5: one HDF5 set per split; ismrmrd: one raw file per slice, as a scanner writes it "
                        "(correlated coil noise with noise scans, 2x readout oversampling, calibration lines)")
    p.add_argument("--splits", nargs="+", default=["val", "test"], choices=["train", "val", "test"], help="sets to write")
    p.add_argument("--n-per-acceleration", type=positive_int, default=16, help="slices per acceleration and split")
    p.add_argument("--accelerations", type=acceleration, nargs="+", default=[4.0, 6.0, 8.0], help="undersampling factors (>= 1)")
    p.add_argument("--size", type=positive_int, default=192, help="image size (pixels)")
    p.add_argument("--coils", type=positive_int, default=8, help="number of coils")
    p.add_argument("--times", type=positive_float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 8.0], help="saturation times [s]")
    p.add_argument("--seed", type=int, default=1234, help="random seed")
    p.add_argument("--download-brainweb", action="store_true", help="download the 20 BrainWeb subjects first")
    p.add_argument("--cache-dir", type=Path, default=None, help="BrainWeb cache (default ~/.cache/pinqi)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train PINQI (or W2Q with --task w2q)")
    p.add_argument("--task", default="pinqi", choices=["pinqi", "w2q"], help="which model")
    p.add_argument("--preset", default="cpu", help="cpu | ship | gpu | paper | micro (PINQI); W2Q: cpu | ship | gpu | paper | micro")
    p.add_argument("--config", type=Path, default=None, help="JSON file of overrides, e.g. {\"steps\": 100, \"model\": {...}}")
    p.add_argument("--mode", default="supervised", choices=["supervised", "self-supervised"], help="W2Q only")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<task>-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a run folder that holds a checkpoint")
    p.add_argument("--init", type=Path, default=None,
                   help="PINQI: start from these weights (a checkpoint or best.pt), e.g. the shipped model")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="PINQI: stop after this much wall time with a resumable checkpoint (e.g. 8 on a lent GPU)")
    p.add_argument("--steps", type=non_negative_int, default=None, help="override the preset's number of steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained model on a simulated HDF5 test set")
    p.add_argument("checkpoint", type=Path, help="PINQI checkpoint (checkpoint.pt or best.pt)")
    p.add_argument("--data", type=Path, required=True, help="test set written by `pinqi simulate`")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json and the figure (default CHECKPOINT's folder/evaluation)")
    p.add_argument("--baselines", nargs="*", default=["cg-sense"], choices=["cg-sense", "zero-filled"], help="classical baselines")
    p.add_argument("--batch-size", type=positive_int, default=4, help="slices per forward pass")


def _add_map(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="T1/T2/PD maps from T1w/T2w/FLAIR NIfTI images (W2Q)")
    p.add_argument("--t1w", type=Path, help="T1-weighted NIfTI (with its BIDS JSON sidecar)")
    p.add_argument("--t2w", type=Path, help="T2-weighted NIfTI")
    p.add_argument("--flair", type=Path, help="FLAIR NIfTI")
    p.add_argument("--brain-mask", type=Path, default=None, help="brain mask NIfTI (default: a threshold mask)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the weights shipped with the package")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    for contrast, name in (("t1w", "T1w"), ("t2w", "T2w"), ("flair", "FLAIR")):
        p.add_argument(f"--tr-{contrast}", type=float, default=None, help=f"{name} RepetitionTime [s] (overrides the sidecar)")
        p.add_argument(f"--te-{contrast}", type=float, default=None, help=f"{name} EchoTime [s]")
        p.add_argument(f"--ti-{contrast}", type=float, default=None, help=f"{name} InversionTime [s]")
        p.add_argument(f"--fa-{contrast}", type=float, default=None, help=f"{name} FlipAngle [deg]")
        p.add_argument(
            f"--seq-{contrast}", default=None, choices=["spin_echo", "spoiled_gre", "flair", "mprage"],
            help=f"{name} sequence type",
        )
    p.add_argument("--tr-exc-t1w", type=float, default=None, help="MP-RAGE T1w: readout spacing (RepetitionTimeExcitation) [s]")
    p.add_argument("--n-shots-t1w", type=int, default=None, help="MP-RAGE T1w: readouts per inversion (NumberShots)")
    p.add_argument("--strict", action="store_true", help="refuse protocols outside the model's training ranges")
    p.add_argument("--calibrate", choices=["tissue", "none"], default="tissue",
                   help="fix the unknown intensity scale of each contrast from the volume's pure CSF and WM with a "
                        "literature prior (tissue), or leave it to the network (none); see pinqi.w2q.calibration")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, descriptions and examples as written."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``pinqi <verb>: error: ...``, status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``pinqi`` parser: one sub-parser per verb, each with ``-v``, its defaults and an example."""
    parser = _Parser(prog="pinqi", description=(__doc__ or "").split("\n")[0], formatter_class=_Formatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level; tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for add in (_add_simulate, _add_train, _add_evaluate, add_demo, _add_map, add_reconstruct):
        add(sub)
    for name, verb in sub.choices.items():
        verb.formatter_class = _Formatter
        if not verb.epilog:
            verb.epilog = f"example: {EXAMPLES[name]}"
        verb.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="log at INFO level; tracebacks on errors")
    return parser


def _dispatch(args: argparse.Namespace) -> None:
    if getattr(args, "out", None) is not None:
        check_out(args.out)
    if args.command in ("simulate", "train", "evaluate"):
        from . import commands

        getattr(commands, args.command)(args)
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(args)
    elif args.command == "map":
        from .map import run_map

        run_map(args)
    elif args.command == "reconstruct":
        from .reconstruct import run_reconstruct

        run_reconstruct(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pinqi`` console script; returns the exit status (0, 2, or 130)."""
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    prog = f"pinqi {args.command}"
    try:
        _dispatch(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a command-line tool answers every failure in one line
        if verbose:
            traceback.print_exc()
        hint = "" if verbose or isinstance(error, (ValueError, TypeError, OSError, KeyError)) else \
            " (run with -v for the traceback)"
        print(f"{prog}: error: {describe(error)}{hint}", file=sys.stderr)
        return 2
    return 0
