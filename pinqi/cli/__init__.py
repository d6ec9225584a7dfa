"""Command-line interface: ``pinqi simulate | train | evaluate | reconstruct | demo | map``.

The parser and :func:`main` live here; the sub-commands in :mod:`pinqi.cli.commands` (PINQI and
the shared ones) and :mod:`pinqi.cli.map` (W2Q), the markdown tables in :mod:`pinqi.cli.tables`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .demo import add_demo
from .reconstruct import add_reconstruct

DEFAULT_RUN_DIR = Path("runs")


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write fixed validation/test sets to HDF5 (or download BrainWeb)")
    p.add_argument("--out", type=Path, default=DEFAULT_RUN_DIR / "data", help="output folder")
    p.add_argument("--anatomy", default="mni152", choices=["mni152", "brainweb", "phantom"])
    p.add_argument("--splits", nargs="+", default=["val", "test"], choices=["train", "val", "test"])
    p.add_argument("--n-per-acceleration", type=int, default=16, help="slices per acceleration and split")
    p.add_argument("--accelerations", type=float, nargs="+", default=[4.0, 6.0, 8.0])
    p.add_argument("--size", type=int, default=192, help="image size (pixels)")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--times", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 8.0], help="seconds")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--download-brainweb", action="store_true", help="download the 20 BrainWeb subjects first")
    p.add_argument("--cache-dir", type=Path, default=None, help="BrainWeb cache (default ~/.cache/pinqi)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train PINQI (or W2Q with --task w2q)")
    p.add_argument("--task", default="pinqi", choices=["pinqi", "w2q"])
    p.add_argument("--preset", default="cpu", help="cpu | ship | gpu | paper | micro (PINQI); W2Q: cpu | paper | micro")
    p.add_argument("--config", type=Path, default=None, help="JSON file of overrides")
    p.add_argument("--mode", default="supervised", choices=["supervised", "self-supervised"], help="W2Q only")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<task>-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a run folder that holds a checkpoint")
    p.add_argument("--init", type=Path, default=None,
                   help="PINQI: start from these weights (a checkpoint or best.pt), e.g. the shipped model")
    p.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    p.add_argument("--no-progress", action="store_true")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a trained model on a simulated HDF5 test set")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, required=True, help="test set written by `pinqi simulate`")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json and the figure")
    p.add_argument("--baselines", nargs="*", default=["cg-sense"], choices=["cg-sense", "zero-filled"])
    p.add_argument("--batch-size", type=int, default=4)


def _add_map(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="T1/T2/PD maps from T1w/T2w/FLAIR NIfTI images (W2Q)")
    p.add_argument("--t1w", type=Path)
    p.add_argument("--t2w", type=Path)
    p.add_argument("--flair", type=Path)
    p.add_argument("--brain-mask", type=Path, default=None)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the weights shipped with the package")
    p.add_argument("--out", type=Path, required=True)
    for contrast, name in (("t1w", "T1w"), ("t2w", "T2w"), ("flair", "FLAIR")):
        p.add_argument(f"--tr-{contrast}", type=float, default=None, help=f"{name} RepetitionTime [s] (overrides the sidecar)")
        p.add_argument(f"--te-{contrast}", type=float, default=None, help=f"{name} EchoTime [s]")
        p.add_argument(f"--ti-{contrast}", type=float, default=None, help=f"{name} InversionTime [s]")
        p.add_argument(f"--fa-{contrast}", type=float, default=None, help=f"{name} FlipAngle [deg]")
        p.add_argument(
            f"--seq-{contrast}", default=None, choices=["spin_echo", "spoiled_gre", "flair"], help=f"{name} sequence type"
        )
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pinqi", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_simulate, _add_train, _add_evaluate, add_demo, _add_map, add_reconstruct):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pinqi`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "simulate":
            from .commands import simulate

            simulate(args)
        elif args.command == "train":
            from .commands import train

            train(args)
        elif args.command == "evaluate":
            from .commands import evaluate

            evaluate(args)
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(args)
        elif args.command == "map":
            from .map import run_map

            run_map(args)
        elif args.command == "reconstruct":
            from .reconstruct import run_reconstruct

            run_reconstruct(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"pinqi {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
