"""Shared machinery of the T1-mapping and ablation benchmarks.

- :class:`BenchmarkPreset` and the ``cpu`` / ``paper`` / ``micro`` presets (one training budget,
  one data stream and one test set for every method);
- the fixed test set (:func:`load_test_set`), written once to HDF5 and reused;
- resumability markers: a method whose folder holds ``done.json`` (and its checkpoint) is never
  trained again;
- training in a fresh child process per method, whose peak resident set size (``VmHWM``) is then
  that method's own;
- result writers (CSV, markdown tables) and the Fig.-5-like boxplot.

Equal budget
    Every learned method sees the same samples in the same order: optimiser step ``s`` uses
    samples ``s·B … s·B + B − 1`` of the PINQI trainer's :class:`simulation.T1MappingDataset`
    (:func:`pinqi.training.build_dataset` of ``preset.train``, same seed), for
    ``preset.train.steps + preset.train.pretrain_steps`` steps. So every method sees
    ``batch_size × total_steps`` samples. PINQI spends its first ``pretrain_steps`` on P_θ
    pretraining (the paper's recipe), DeepT1 splits the steps in half (image stage, then map
    stage), every other method trains end to end on all of them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pinqi.config import PINQIConfig, TrainConfig
from pinqi.config import cpu_preset as pinqi_cpu_preset
from pinqi.config import micro_preset as pinqi_micro_preset
from pinqi.config import paper_preset as pinqi_paper_preset
from pinqi.config import ship_preset as pinqi_ship_preset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DONE = "done.json"
NOTES_MARKER = "<!-- notes: everything below this line is kept when the file is regenerated -->"


@dataclass(frozen=True)
class BenchmarkPreset:
    """Everything one benchmark run depends on.

    Attributes
    ----------
    name
        Preset name (children rebuild the preset from it).
    train
        PINQI's training configuration; it also fixes the data stream (anatomy, image size, coils,
        saturation times, acceleration range, batch size, seed) and the budget of every method.
    lr_baselines
        Peak AdamW learning rate of the baselines (same warm-up + cosine schedule as PINQI).
    baselines
        Constructor keyword arguments per baseline name (``"MANTIS"``, ``"DeepT1"``, ...).
    mantis_kspace_weight
        Weight of MANTIS' k-space loss (the paper's best: 0.01).
    test_per_acceleration, accelerations, test_seed
        The fixed test set: this many slices per acceleration, from the anatomy's test split.
    eval_batch_size
        Slices per forward pass at evaluation.
    cg_sense_lambda
        Tikhonov weight of the CG-SENSE baseline.
    """

    name: str
    train: TrainConfig
    lr_baselines: float = 1e-3
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    mantis_kspace_weight: float = 0.01
    test_per_acceleration: int = 8
    accelerations: tuple[float, ...] = (4.0, 6.0, 8.0)
    test_seed: int = 1234
    eval_batch_size: int = 4
    cg_sense_lambda: float = 0.1

    @property
    def total_steps(self) -> int:
        """Optimiser steps of every learned method (pretraining included)."""
        return self.train.steps + self.train.pretrain_steps

    @property
    def samples_seen(self) -> int:
        """Training samples every learned method sees."""
        return self.train.batch_size * self.total_steps

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["train"] = self.train.to_dict()
        values["accelerations"] = list(self.accelerations)
        return json.loads(json.dumps(values))

    def fingerprint(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> BenchmarkPreset:
        return dataclasses.replace(self, **changes)


def cpu_preset() -> BenchmarkPreset:
    """The T1-mapping benchmark on 2 CPU cores in 60-90 minutes.

    Choices and why:

    - data: the PINQI ``cpu`` training preset (MNI152 anatomy, 64x64, 4 coils, 5 saturation
      times, acceleration drawn in [4, 8], batch 4). 64x64 keeps grey/white-matter structure;
      4 coils instead of 8 quarter the FFT work without changing the problem's character.
    - budget: 400 steps (+ 40 P_θ pretraining steps) x 4 = 1,760 samples per method. Measured with
      one torch thread per process (``--threads 1``: on a shared 2-core machine two OpenMP threads
      wait for each other whenever another process takes a core, which made steps up to 20x
      slower): a PINQI step (five iterations, each with two U-Nets, CG and a pixel-wise L-BFGS fit,
      implicit backward) takes ~5 s, a DeepT1 image-stage step ~4 s and a map-stage step ~1.5 s,
      DOPAMINE ~1.5 s, CoRRECT ~0.8 s, MANTIS ~0.1 s; simulating a sample ~3 ms. So PINQI trains
      in ~37 min, DeepT1 in ~20, the other three in ~17 together: 60-80 min in all, plus a few
      minutes of evaluation. PINQI's own ``cpu`` preset uses 50 + 400 steps; 40 + 400 here.
    - baselines shrunk like PINQI's cpu U-Nets (about 1/4 of the paper's widths), keeping depth:
      MANTIS 5 levels of (32..256), DeepT1 a 32-filter CRNN and a (32..256) U-Net, DOPAMINE 32-filter
      CNNs, CoRRECT a 32-filter CNN and a (32..256) U-Net; DeepT1's CG capped like PINQI's
      (30 iterations, tolerance 1e-5).
    - test set: 8 slices per acceleration (4x, 6x, 8x) = 24 slices of the MNI152 test split: the
      classical fits and the five learned methods evaluate in a few minutes.
    """
    base = pinqi_cpu_preset()
    train = base.replace(steps=400, pretrain_steps=40, warmup_steps=30, checkpoint_every=50)
    return BenchmarkPreset(
        name="cpu",
        train=train,
        lr_baselines=1e-3,
        baselines={
            "MANTIS": {"features": [32, 64, 128, 256, 256]},
            "DeepT1": {"hidden": 32, "map_features": [32, 64, 128, 256], "dc_max_iter": 30, "dc_tol": 1e-5},
            "DOPAMINE": {"hidden": 32, "init_features": [16, 32, 64]},
            "CoRRECT": {"hidden": 32, "map_features": [32, 64, 128, 256], "map_bottleneck": None},
        },
        test_per_acceleration=8,
        eval_batch_size=4,
    )


def paper_preset() -> BenchmarkPreset:
    """The paper's configuration (192x192, 8 coils, batch 16, 80 epochs; full-size baselines). GPU."""
    return BenchmarkPreset(
        name="paper",
        train=pinqi_paper_preset(),
        lr_baselines=1e-3,
        baselines={"MANTIS": {}, "DeepT1": {}, "DOPAMINE": {}, "CoRRECT": {}},
        test_per_acceleration=16,
        eval_batch_size=8,
    )


def ship_preset() -> BenchmarkPreset:
    """The learned baselines on the shipped PINQI model's data, at its training budget.

    The data stream is PINQI's ``ship`` training preset (64², 4 coils, accelerations 1-10 on 16
    calibration lines, ESPIRiT coil maps in 80 % of samples, wide T1s, inserts, random global
    scale and phase; batch 4). The budget is 4,000 steps x 4 samples, about what the shipped model
    trained for over its stages (see ``pinqi/weights/pinqi_t1_card.md``), with one warm-up +
    cosine schedule. Baseline widths as in the ``cpu`` preset. Used by ``benchmarks.real_data``
    (``--learned``), which scores the baselines on its brain test set; their own test set here is
    the ``cpu`` preset's kind (8 slices per acceleration).
    """
    train = pinqi_ship_preset().replace(steps=4000, pretrain_steps=0, warmup_steps=100, checkpoint_every=50)
    return cpu_preset().replace(name="ship", train=train)


def micro_preset() -> BenchmarkPreset:
    """Seconds-long end-to-end runs for the tests: 16x16 phantom, 2 coils, 2 steps, tiny widths."""
    train = pinqi_micro_preset().replace(steps=2, pretrain_steps=0, warmup_steps=1, checkpoint_every=1)
    return BenchmarkPreset(
        name="micro",
        train=train,
        lr_baselines=1e-3,
        baselines={
            "MANTIS": {"features": [4, 8]},
            "DeepT1": {"hidden": 4, "n_layers": 3, "n_iterations": 2, "map_features": [4, 8], "dc_max_iter": 10},
            "DOPAMINE": {"hidden": 4, "n_layers": 2, "n_iterations": 2, "init_features": [4, 8]},
            "CoRRECT": {"hidden": 4, "n_layers": 2, "n_iterations": 2, "map_features": [4, 8], "map_bottleneck": None},
        },
        test_per_acceleration=1,
        eval_batch_size=3,
    )


PRESETS = {"cpu": cpu_preset, "paper": paper_preset, "micro": micro_preset, "ship": ship_preset}


def get_preset(name: str) -> BenchmarkPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]()


# -- test set ----------------------------------------------------------------------------------
def load_test_set(
    data_dir: Path,
    preset: BenchmarkPreset,
    times: tuple[float, ...] | None = None,
    accelerations: tuple[float, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """The fixed test set: ``preset.test_per_acceleration`` slices per acceleration, concatenated.

    Written once by :func:`pinqi.cli.commands.simulate_split` (``test`` split of the anatomy, one
    seeded group per acceleration) to ``data_dir/<T>times/test.h5`` and reused while its arguments
    are unchanged.
    """
    from pinqi.cli.commands import simulate_split
    from simulation.h5io import read_t1_dataset_h5

    cfg = preset.train
    times = tuple(cfg.times if times is None else times)
    accelerations = tuple(preset.accelerations if accelerations is None else accelerations)
    path = simulate_split(
        Path(data_dir) / f"{len(times)}times", "test", anatomy=cfg.anatomy,
        n_per_acceleration=preset.test_per_acceleration, accelerations=accelerations, size=cfg.image_size,
        coils=cfg.n_coils, times=times, seed=preset.test_seed,
    )  # fmt: skip
    return read_t1_dataset_h5(path)


def split_batches(data: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, torch.Tensor]]:
    n = data["kspace"].shape[0]
    return [{k: v[i : i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]


# -- markers, children, memory -----------------------------------------------------------------
def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def read_done(method_dir: Path) -> dict[str, Any] | None:
    """The done marker's statistics, or None when the method has not finished training."""
    path = Path(method_dir) / DONE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def train_in_child(module: str, method: str, preset: str, out: Path, extra: list[str] | None = None) -> None:
    """Run ``python -m module --train-only method --preset preset --out out`` in a fresh process."""
    cmd = [sys.executable, "-m", module, "--train-only", method, "--preset", preset, "--out", str(out)]
    cmd += extra or []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"training {method} failed (exit {result.returncode}): {' '.join(cmd)}")


def ensure_done(
    module: str, method: str, directory: Path, description: str, preset_name: str, out: Path, isolate: bool,
    extra: list[str] | None, train_only: Callable[[], Any],
) -> dict[str, Any]:
    """``directory``'s training statistics, training ``method`` first (in a child process of
    ``module`` when ``isolate``, else by ``train_only()``) unless its done marker exists."""
    stats = read_done(directory)
    if stats is not None:
        print(f"{method}: already trained ({directory / DONE}), not retraining", flush=True)
        return stats
    print(f"{method}: training {description} ...", flush=True)
    if isolate:
        train_in_child(module, method, preset_name, out, extra)
    else:
        train_only()
    stats = read_done(directory)
    if stats is None:
        raise RuntimeError(f"training {method} finished without writing {directory / DONE}")
    return stats


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")


# -- writers -----------------------------------------------------------------------------------
def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines)


def write_results_text(path: Path, text: str) -> None:
    """Write a generated results file atomically, keeping its hand-written notes.

    ``text`` is the generated part; what stood below :data:`NOTES_MARKER` in the old file follows
    the marker in the new one.
    """
    notes = kept_notes(path)
    write_text_atomic(path, text.rstrip("\n") + "\n\n" + NOTES_MARKER + (notes if notes else "\n"))


def write_model_report(
    path: Path, title: str, module: str, checkpoint: Path | None, details: str, sections: list[tuple[str, str]]
) -> None:
    """Write the results file of a benchmark of one PINQI checkpoint (the shipped model by default).

    A title, a line naming the command, date, git revision and model (``details`` follows the
    model's name), then one ``## heading`` per ``(heading, body)`` of ``sections``; notes below
    :data:`NOTES_MARKER` are kept.
    """
    source = checkpoint or "the shipped model (pinqi/weights/pinqi_t1.pt)"
    header = f"`python -m {module}` — {timestamp()}, git {git_revision()}, model: {source}{details}"
    write_results_text(path, "\n\n".join([f"# {title}", header, *(f"## {h}\n\n{b}" for h, b in sections)]))
    print(f"wrote {path}")


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing results file (below :data:`NOTES_MARKER`)."""
    if not path.is_file():
        return ""
    text = path.read_text()
    return text.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in text else ""


def mean_sd(stats: dict[str, Any], digits: int = 4) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"


def save_boxplots(path: Path, results: dict[str, dict[str, Any]], metric: str = "nrmse", label: str = "T1 nRMSE") -> None:
    """Boxplots of ``metric`` per method (rows) and acceleration (boxes), like the paper's Fig. 5.

    ``results``: method -> ``{"per_acceleration": {acc: {metric: {"values", "mean"}}}}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    accs = sorted({acc for r in results.values() for acc in r["per_acceleration"]}, key=float)
    colours = plt.cm.Blues([0.85 - 0.5 * i / max(1, len(accs) - 1) for i in range(len(accs))])
    fig, ax = plt.subplots(figsize=(8, 0.9 * len(methods) + 1.5))
    width = 0.8 / len(accs)
    for j, acc in enumerate(accs):
        positions, data = [], []
        for i, method in enumerate(methods):
            entry = results[method]["per_acceleration"].get(acc)
            if entry is None:
                continue
            positions.append(len(methods) - 1 - i + (j - (len(accs) - 1) / 2) * width)
            data.append(entry[metric]["values"])
        parts = ax.boxplot(data, positions=positions, widths=0.9 * width, orientation="horizontal", patch_artist=True,
                           manage_ticks=False, flierprops={"markersize": 3}, medianprops={"color": "black"})
        for box in parts["boxes"]:
            box.set_facecolor(colours[j])
        for pos, values in zip(positions, data):
            ax.text(max(values), pos, f"  {sum(values) / len(values):.3f}", va="center", fontsize=7)
        ax.plot([], [], "s", color=colours[j], label=f"{float(acc):g}x")
    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels(list(reversed(methods)))
    ax.set_xlabel(f"{label} (per test slice; mean as label)")
    ax.legend(title="acceleration", loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def pinqi_config_for(train: TrainConfig, **model_changes: Any) -> TrainConfig:
    """``train`` with its PINQI configuration changed (e.g. an ablation's switches)."""
    model: PINQIConfig = train.model.replace(**model_changes)
    return train.replace(model=model)
