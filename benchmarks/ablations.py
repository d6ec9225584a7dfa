"""Ablation study of PINQI (the paper's Fig. 6): (a)–(g) by configuration switches, (h)/(i) by
:mod:`benchmarks.t1_regression`, every variant trained with the same budget.

``python -m benchmarks.ablations --preset cpu|micro [--out DIR] [--variants ...] [--results DIR]``

As in the paper: eight saturation times (0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 2, 8 s), training and test
at 8-fold acceleration. Each variant trains in a fresh child process (``--train-only KEY``) on the
same deterministic stream for the same number of steps (see :mod:`benchmarks.t1_common`), and is
evaluated on one fixed 8x test set. Writes ``ablations.md`` (nRMSE and MAE of T1, mean ± sd, and
the change against the proposed PINQI). Resumable like :mod:`benchmarks.t1_mapping`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from pinqi.config import ABLATIONS
from pinqi.evaluation import evaluate_method, write_json
from simulation.t1_dataset import ABLATION_TIMES

from . import t1_common as common
from .t1_methods import BASELINES, load_learned, load_pinqi_method, train_learned, train_pinqi

DESCRIPTIONS = {
    "PINQI": "proposed PINQI",
    "a": "(a) no signal function",
    "b": "(b) no image-space regularisation",
    "c": "(c) no parameter-space regularisation",
    "d": "(d) no nonlinear solver",
    "e": "(e) gradient descent instead of L-BFGS",
    "f": "(f) fixed (y_reg, p_reg) for all iterations",
    "g1": "(g) single iteration (T = 1)",
    "g2": "(g) two iterations (T = 2)",
    "h": "(h) separate regression",
    "i": "(i) end-to-end regression",
}
VARIANTS = tuple(DESCRIPTIONS)


def ablation_preset(name: str) -> common.BenchmarkPreset:
    """The benchmark preset ``name`` at 8 saturation times and 8x, with a budget that fits 11 runs.

    ``cpu``: 48x48 (instead of 64x64: eight images per sample and eleven trainings), 4 coils,
    batch 4, 200 steps + 20 P_θ pretraining steps = 880 samples per variant (a full PINQI step
    takes ~2.5 s with one thread, so the eleven trainings take about an hour), 16 test slices.
    ``micro``: the micro benchmark preset (16x16 phantom, 2 steps) at 8 times and 8x.
    """
    base = common.get_preset(name)
    train = base.train.replace(times=ABLATION_TIMES, acceleration=(8.0, 8.0))
    if name == "cpu":
        train = train.replace(image_size=48, steps=200, pretrain_steps=20, warmup_steps=20, checkpoint_every=25)
        return base.replace(train=train, accelerations=(8.0,), test_per_acceleration=16)
    return base.replace(train=train, accelerations=(8.0,))


def variant_train_config(key: str, preset: common.BenchmarkPreset):
    """PINQI's training configuration for variant ``key`` (PINQI and (a)–(g))."""
    if key == "PINQI":
        return preset.train
    changes = dict(ABLATIONS[key])
    if key in ("g1", "g2") and preset.train.model.n_iterations < changes["n_iterations"]:
        changes["n_iterations"] = preset.train.model.n_iterations  # micro preset: T = 2 already
    return common.pinqi_config_for(preset.train, **changes)


def train_only(key: str, preset: common.BenchmarkPreset, out: Path) -> dict[str, Any]:
    directory = out / key
    if key in ("h", "i"):
        return train_learned(BASELINES[key](), preset, directory)
    return train_pinqi(variant_train_config(key, preset), preset, directory, name=key)


def ensure_trained(key: str, preset: common.BenchmarkPreset, out: Path, isolate: bool, extra: list[str]) -> dict[str, Any]:
    return common.ensure_done("benchmarks.ablations", key, out / key, f"{DESCRIPTIONS[key]} ({preset.total_steps} steps)",
                              preset.name, out, isolate, extra, lambda: train_only(key, preset, out))


def run(
    preset: common.BenchmarkPreset,
    out: Path,
    variants: list[str],
    results_dir: Path,
    isolate: bool = True,
    command: str = "",
    extra: list[str] | None = None,
) -> dict[str, Any]:
    data = common.load_test_set(out / "data", preset, times=tuple(preset.train.times), accelerations=(8.0,))
    batches = common.split_batches(data, preset.eval_batch_size)
    stats = {k: ensure_trained(k, preset, out, isolate, extra or []) for k in variants}
    results = {}
    for key in variants:
        if key in ("h", "i"):
            predict = load_learned(BASELINES[key](), preset, out / key)
        else:
            predict = load_pinqi_method(out / key)
        outcome = evaluate_method(predict, batches)
        outcome.pop("predictions")
        results[key] = outcome
        print(f"{key}: evaluated", flush=True)
    write_json(out / "evaluation.json", {"results": results, "training": stats})
    write_markdown(preset, results, stats, results_dir, command)
    return results


def write_markdown(
    preset: common.BenchmarkPreset, results: dict[str, Any], stats: dict[str, Any], results_dir: Path, command: str
) -> None:
    acc = "8"
    cfg = preset.train
    reference = results.get("PINQI", {}).get("per_acceleration", {}).get(acc)
    rows = []
    for key, outcome in results.items():
        m = outcome["per_acceleration"][acc]
        change = "-" if reference is None or key == "PINQI" else (
            f"{100 * (m['nrmse']['mean'] / reference['nrmse']['mean'] - 1):+.0f}%"
        )
        rows.append({
            "variant": DESCRIPTIONS[key] + (f" (T = {cfg.model.n_iterations})" if key == "PINQI" else ""),
            "T1 nRMSE": common.mean_sd(m["nrmse"]), "T1 MAE [s]": common.mean_sd(m["mae"]),
            "nRMSE vs PINQI": change, "parameters": f"{stats[key]['parameters']:,}",
            "training compute [min]": f"{stats[key]['train_seconds'] / 60:.1f}",
        })  # fmt: skip
    checks = []
    if "h" in results and "i" in results:
        h, i = (results[k]["per_acceleration"][acc]["nrmse"]["mean"] for k in ("h", "i"))
        checks.append(f"- (i) end-to-end vs (h) separate regression: nRMSE {i:.4f} vs {h:.4f}, a reduction of "
                      f"{100 * (1 - i / h):.0f}% (paper: > 20%).")
    if reference is not None:
        worse = [k for k in results if k != "PINQI"
                 and results[k]["per_acceleration"][acc]["nrmse"]["mean"] > reference["nrmse"]["mean"]]
        checks.append(f"- Variants worse than the proposed PINQI in T1 nRMSE: {len(worse)} of {len(results) - 1} "
                      f"({', '.join(worse) or 'none'}); in the paper every ablation is worse.")
    md = [
        "# PINQI ablation study (cf. the paper's Fig. 6)", "",
        f"Generated {common.timestamp()} by `{command}` at revision `{common.git_revision()}`.", "",
        f"Preset `{preset.name}`: {cfg.image_size}x{cfg.image_size} {cfg.anatomy} anatomy, {cfg.n_coils} coils, "
        f"{len(cfg.times)} saturation times {list(cfg.times)} s, training and test at 8x; "
        f"{preset.test_per_acceleration} test slices. **Equal budget**: every variant saw the same "
        f"{preset.samples_seen} samples ({preset.total_steps} steps x batch {cfg.batch_size}) of the same "
        f"deterministic stream; PINQI variants spend the first {cfg.pretrain_steps} on P_theta pretraining "
        f"(the variants without P_theta in the loop still pretrain the P_theta that gives p0), (h)/(i) train "
        f"end to end on all steps with PINQI's U-Net learning rate. The paper tuned each variant's learning "
        f"rate on a validation set; here all share PINQI's.", "",
        common.markdown_table(rows), "", *checks, "",
        "(h): Y_theta + data-consistency image reconstruction trained on the image MSE, then a pixel-wise "
        "L-BFGS fit; (i): the same network with one differentiable fit layer, trained on the parameter MSE "
        "(see benchmarks/t1_regression.py).", "",
        common.NOTES_MARKER,
    ]  # fmt: skip
    notes = common.kept_notes(results_dir / "ablations.md")
    common.write_text_atomic(results_dir / "ablations.md", "\n".join(md) + (notes if notes else "\n"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablations", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=("cpu", "micro"), default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/benchmarks/ablations-PRESET)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--no-isolate", action="store_true", help="train in this process")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--train-only", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = ablation_preset(args.preset)
    out = args.out or common.ROOT / "runs" / "benchmarks" / f"ablations-{args.preset}"
    if args.train_only:
        train_only(args.train_only, preset, out)
        return
    extra = ["--threads", str(args.threads)] if args.threads else []
    command = "python -m benchmarks.ablations " + " ".join(argv if argv is not None else sys.argv[1:])
    run(preset, out, list(args.variants), args.results, not args.no_isolate, command.strip(), extra)
    print(f"wrote {args.results / 'ablations.md'}")


if __name__ == "__main__":
    main()
