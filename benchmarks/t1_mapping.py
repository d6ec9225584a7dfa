"""T1-mapping benchmark: PINQI against learned and classical baselines at equal training budget.

``python -m benchmarks.t1_mapping --preset cpu|paper|micro [--out DIR] [--methods ...] [--results DIR]``

Trains every learned method (PINQI, MANTIS, DeepT1, DOPAMINE, CoRRECT) on the same deterministic
data stream with the same number of samples (see :mod:`benchmarks.t1_common`), each in a fresh
child process (``--train-only METHOD``) so that its peak resident memory is its own, then
evaluates them and the classical pipelines (zero-filled + fit, CG-SENSE + fit) on a fixed test set
at 4x, 6x and 8x. Writes ``t1_mapping.md``, ``t1_mapping.csv``, ``t1_mapping_boxplots.png`` (T1
nRMSE per test slice, like the paper's Fig. 5) and ``t1_mapping_maps.png`` (maps and error maps
of one 8x test slice, like its Fig. 4) to ``--results`` (default ``benchmarks/results``).

Resumable: a method whose folder under ``--out`` holds ``done.json`` is not trained again, an
interrupted one continues from its last checkpoint; rerunning only evaluates and aggregates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pinqi.evaluation import evaluate_method, save_map_figure, write_json

from . import t1_common as common
from .t1_methods import BASELINES, classical_methods, load_learned, load_pinqi_method, train_learned, train_pinqi

LEARNED = ("PINQI", "DeepT1", "CoRRECT", "MANTIS", "DOPAMINE")
CLASSICAL = {"CG-SENSE": "CG-SENSE + fit", "zero-filled": "zero-filled + fit"}
ALL_METHODS = (*LEARNED, *CLASSICAL)


def method_dir(out: Path, method: str) -> Path:
    return out / method.lower()


def train_only(method: str, preset: common.BenchmarkPreset, out: Path) -> dict[str, Any]:
    """Train one learned method into ``out/<method>`` (what the child process runs)."""
    directory = method_dir(out, method)
    if method == "PINQI":
        return train_pinqi(preset.train, preset, directory)
    return train_learned(BASELINES[method](), preset, directory)


def ensure_trained(
    method: str, preset: common.BenchmarkPreset, out: Path, isolate: bool = True, extra: list[str] | None = None
) -> dict[str, Any]:
    """The method's training statistics, training it first unless ``done.json`` exists."""
    description = f"{preset.total_steps} steps x {preset.train.batch_size} samples"
    return common.ensure_done("benchmarks.t1_mapping", method, method_dir(out, method), description, preset.name, out,
                              isolate, extra, lambda: train_only(method, preset, out))


def evaluate_all(
    preset: common.BenchmarkPreset, out: Path, methods: list[str], data: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metrics per method (display name) and every method's predictions ``(N, 3, Y, X)``."""
    batches = common.split_batches(data, preset.eval_batch_size)
    predictors: dict[str, Any] = {}
    for method in methods:
        if method == "PINQI":
            predictors[method] = load_pinqi_method(method_dir(out, method))
        elif method in BASELINES:
            predictors[method] = load_learned(BASELINES[method](), preset, method_dir(out, method))
    classical = classical_methods(preset, tuple(preset.train.times))
    for key, name in CLASSICAL.items():
        if key in methods:
            predictors[name] = classical[name]
    results, predictions = {}, {}
    for name, predict in predictors.items():
        started = time.perf_counter()
        outcome = evaluate_method(predict, batches)
        predictions[name] = torch.cat(outcome.pop("predictions"))
        results[name] = outcome
        print(f"{name}: evaluated in {time.perf_counter() - started:.1f} s", flush=True)
    return results, predictions


def target_lines(results: dict[str, Any]) -> list[str]:
    """The DESIGN.md quality targets, checked on these results."""
    lines: list[str] = []
    accs = sorted({a for r in results.values() for a in r["per_acceleration"]}, key=float)
    if "PINQI" not in results or not accs:
        return ["PINQI was not evaluated: targets not checked."]
    top = accs[-1]

    def nrmse(name: str, acc: str) -> float:
        return results[name]["per_acceleration"][acc]["nrmse"]["mean"]

    pinqi = nrmse("PINQI", top)
    learned = [m for m in LEARNED[1:] if m in results]
    if learned:
        best = min(learned, key=lambda m: nrmse(m, top))
        gain = 1 - pinqi / nrmse(best, top)
        ok = "reached" if gain >= 0.2 else "NOT reached"
        lines.append(f"- T1 nRMSE at {top}x: PINQI {pinqi:.4f} vs the best learned baseline ({best}) "
                     f"{nrmse(best, top):.4f}, a relative reduction of {100 * gain:.0f}%; target >= 20%: **{ok}**.")
    if "CG-SENSE + fit" in results:
        gain = 1 - pinqi / nrmse("CG-SENSE + fit", top)
        ok = "reached" if gain >= 0.4 else "NOT reached"
        lines.append(f"- T1 nRMSE at {top}x: PINQI {pinqi:.4f} vs CG-SENSE + fit {nrmse('CG-SENSE + fit', top):.4f}, "
                     f"a relative reduction of {100 * gain:.0f}%; target >= 40%: **{ok}**.")
    if "DeepT1" in results and "MANTIS" in results:
        order = [acc for acc in accs if nrmse("PINQI", acc) < nrmse("DeepT1", acc) < nrmse("MANTIS", acc)]
        ok = "reached" if len(order) == len(accs) else "NOT reached"
        held = ", ".join(f"{a}x" for a in order) or "none"
        lines.append(f"- Ordering PINQI < DeepT1 < MANTIS in T1 nRMSE at every acceleration: **{ok}** "
                     f"(holds at: {held}).")
    return lines


def write_results(
    preset: common.BenchmarkPreset,
    results: dict[str, Any],
    stats: dict[str, dict[str, Any]],
    predictions: dict[str, torch.Tensor],
    data: dict[str, torch.Tensor],
    results_dir: Path,
    command: str,
) -> None:
    """``t1_mapping.csv``, ``t1_mapping.md`` and the two figures."""
    rows, table = [], []
    for name, outcome in results.items():
        s = stats.get(name, {})
        for acc, m in outcome["per_acceleration"].items():
            rows.append({
                "method": name, "acceleration": acc, "n_slices": len(m["nrmse"]["values"]),
                "t1_nrmse_mean": m["nrmse"]["mean"], "t1_nrmse_sd": m["nrmse"]["sd"],
                "t1_mae_s_mean": m["mae"]["mean"], "t1_mae_s_sd": m["mae"]["sd"],
                "t1_ssim_mean": m["ssim"]["mean"], "t1_ssim_sd": m["ssim"]["sd"],
                "parameters": s.get("parameters", 0), "train_seconds": s.get("train_seconds", 0.0),
                "peak_train_rss_mib": s.get("peak_rss_bytes", 0) / 2**20,
                "inference_s_per_slice": outcome["seconds_per_slice"],
            })  # fmt: skip
            table.append({
                "method": name, "acc.": f"{acc}x", "T1 nRMSE": common.mean_sd(m["nrmse"]),
                "T1 MAE [s]": common.mean_sd(m["mae"]), "T1 SSIM": common.mean_sd(m["ssim"], 3),
            })  # fmt: skip
    common.write_csv(results_dir / "t1_mapping.csv", rows)
    cost = [{
        "method": name,
        "parameters": f"{stats[name]['parameters']:,}" if name in stats else "-",
        "training compute [min]": f"{stats[name]['train_seconds'] / 60:.1f}" if name in stats else "-",
        "peak training RSS [MiB]": f"{stats[name]['peak_rss_bytes'] / 2**20:.0f}" if name in stats else "-",
        "inference [s/slice]": f"{outcome['seconds_per_slice']:.3f}",
    } for name, outcome in results.items()]  # fmt: skip
    cfg = preset.train
    preset_doc = (common.PRESETS[preset.name].__doc__ or "").strip()
    md = [
        "# T1-mapping benchmark", "",
        f"Generated {common.timestamp()} by `{command}` at revision `{common.git_revision()}`.", "",
        "## Setup", "",
        f"Preset `{preset.name}`: {cfg.image_size}x{cfg.image_size} {cfg.anatomy} anatomy, {cfg.n_coils} coils, "
        f"saturation times {list(cfg.times)} s, training acceleration drawn in {list(cfg.acceleration)}; "
        f"test set: {preset.test_per_acceleration} slices per acceleration from the test split, "
        f"accelerations {[f'{a:g}x' for a in preset.accelerations]}.", "",
        f"**Equal budget**: every learned method saw the same {preset.samples_seen} training samples "
        f"({preset.total_steps} optimiser steps x batch {cfg.batch_size}) of the same deterministic stream "
        f"(`T1MappingDataset`, seed {cfg.seed}; step s uses samples s*B ... s*B+B-1). PINQI spends the first "
        f"{cfg.pretrain_steps} steps on P_theta pretraining; DeepT1 spends the first half of the steps on its "
        f"image stage and the second half on its map stage; the others train end to end on all steps. "
        f"AdamW with warm-up + cosine decay for all (PINQI lr {cfg.lr_networks:g} / lambdas {cfg.lr_lambdas:g}, "
        f"baselines lr {preset.lr_baselines:g}), weight decay {cfg.weight_decay:g}, gradient clipping at 1. "
        f"Classical methods need no training.", "",
        "Training compute = summed optimiser-step time (data simulation excluded; the stream is the same for "
        "all); peak RSS = VmHWM of the training child process (simulation included).", "",
        "<details><summary>preset notes</summary>", "", preset_doc, "", "</details>", "",
        "## T1 quality (mean ± sd over test slices, inside the brain mask)", "", common.markdown_table(table), "",
        "## Cost", "", common.markdown_table(cost), "",
        "## Targets (DESIGN.md)", "", *target_lines(results), "",
        "## Figures", "",
        "![T1 nRMSE per test slice](t1_mapping_boxplots.png)", "",
        "![maps and error maps, one 8x test slice](t1_mapping_maps.png)", "",
        common.NOTES_MARKER,
    ]  # fmt: skip
    notes = common.kept_notes(results_dir / "t1_mapping.md")
    common.write_text_atomic(results_dir / "t1_mapping.md", "\n".join(md) + (notes if notes else "\n"))
    common.save_boxplots(results_dir / "t1_mapping_boxplots.png", results)
    accs = data["acceleration"]
    index = int(torch.nonzero(accs == accs.max())[0])
    save_map_figure(
        results_dir / "t1_mapping_maps.png", data["params"][index],
        {name: p[index] for name, p in predictions.items()}, data["brain_mask"][index],
        title=f"test slice {index}, {float(accs[index]):g}x",
    )  # fmt: skip


def run(
    preset: common.BenchmarkPreset,
    out: Path,
    methods: list[str],
    results_dir: Path,
    isolate: bool = True,
    command: str = "",
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """Train what is missing, evaluate everything, write the results; returns the metrics."""
    data = common.load_test_set(out / "data", preset)
    stats = {m: ensure_trained(m, preset, out, isolate, extra) for m in methods if m in LEARNED}
    results, predictions = evaluate_all(preset, out, methods, data)
    write_json(out / "evaluation.json", {"results": results, "training": stats})
    write_results(preset, results, stats, predictions, data, results_dir, command)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.t1_mapping", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/benchmarks/t1_mapping-PRESET)")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(ALL_METHODS))
    parser.add_argument("--results", type=Path, default=common.RESULTS, help="where the .md/.csv/.png go")
    parser.add_argument("--no-isolate", action="store_true", help="train in this process (no peak-memory figure)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--train-only", choices=LEARNED, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = common.get_preset(args.preset)
    out = args.out or common.ROOT / "runs" / "benchmarks" / f"t1_mapping-{args.preset}"
    if args.train_only:
        train_only(args.train_only, preset, out)
        return
    command = "python -m benchmarks.t1_mapping " + " ".join(argv if argv is not None else sys.argv[1:])
    extra = ["--threads", str(args.threads)] if args.threads else []
    run(preset, out, list(args.methods), args.results, not args.no_isolate, command.strip(), extra)
    print(f"wrote {args.results / 't1_mapping.md'}")


if __name__ == "__main__":
    main()
