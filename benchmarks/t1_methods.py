"""The methods of the T1-mapping benchmarks: how each is built, trained (equal budget) and applied.

Every learned method is trained on the same stream (see :mod:`benchmarks.t1_common`): step ``s``
takes samples ``s·B … s·B + B − 1`` of :func:`pinqi.training.build_dataset`, for
``total_steps`` steps. PINQI (and its ablations) train with :class:`pinqi.training.Trainer`; the
baselines with :func:`train_learned`, which uses the same AdamW + warm-up + cosine schedule
(:func:`pinqi.common.trainer.learning_rate_factor`), gradient clipping at 1, checkpoints every
``checkpoint_every`` steps and exact resumption. DeepT1 splits the steps: the first half trains the
image stage, the second half the map stage (each with its own warm-up + cosine schedule).

A method's folder holds ``checkpoint.pt``, ``train_log.jsonl`` and, once training has finished,
``done.json`` (parameter count, training compute time, peak RSS, ...).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate

from pinqi.baselines.common import reference_phase
from pinqi.common.checkpoint import load_checkpoint, save_checkpoint
from pinqi.common.modules import count_parameters
from pinqi.common.trainer import LOG_NAME, learning_rate_factor
from pinqi.config import TrainConfig
from pinqi.training import Trainer, build_dataset, load_pinqi
from simulation import SaturationRecovery

from .t1_common import DONE, BenchmarkPreset, peak_rss_bytes, write_json_atomic

Predict = Callable[[dict[str, torch.Tensor]], torch.Tensor]
CHECKPOINT = "checkpoint.pt"


@dataclass
class LearnedSpec:
    """How to build, train and apply one learned baseline.

    ``phases(total_steps)`` lists (phase, steps); ``set_phase(model, phase)`` returns the
    parameters that train in it; ``step(model, optimizer, batch, q, preset)`` does one optimiser
    step and returns the loss; ``predict(model, batch, q)`` returns (Re M0, Im M0, R1) ``(B, 3, Y, X)``.
    """

    name: str
    build: Callable[[BenchmarkPreset, nn.Module], nn.Module]
    step: Callable[[nn.Module, torch.optim.Optimizer, dict[str, torch.Tensor], nn.Module, BenchmarkPreset], torch.Tensor]
    predict: Callable[[nn.Module, dict[str, torch.Tensor], nn.Module], torch.Tensor]
    phases: Callable[[int], list[tuple[str, int]]] = lambda total: [("train", total)]
    set_phase: Callable[[nn.Module, str], list[nn.Parameter]] = lambda model, phase: list(model.parameters())
    lr: Callable[[BenchmarkPreset], float] = lambda preset: preset.lr_baselines
    extra: dict[str, Any] = field(default_factory=dict)


# -- specs -------------------------------------------------------------------------------------
def _mantis() -> LearnedSpec:
    from pinqi.baselines.mantis import MANTIS, mantis_train_step

    def build(preset: BenchmarkPreset, q: nn.Module) -> nn.Module:
        return MANTIS(len(preset.train.times), **preset.baselines.get("MANTIS", {}))

    def predict(model: nn.Module, batch: dict[str, torch.Tensor], q: nn.Module) -> torch.Tensor:
        out = model(batch["kspace"], batch["csm"], batch["mask"])
        return MANTIS.to_params(out, reference_phase(out["zero_filled"]).to(out["r1"].dtype))

    return LearnedSpec(
        "MANTIS", build,
        lambda m, o, b, q, preset: mantis_train_step(m, o, b, q, kspace_weight=preset.mantis_kspace_weight),
        predict,
    )  # fmt: skip


def _deept1() -> LearnedSpec:
    from pinqi.baselines.deept1 import DeepT1, deept1_train_step

    def build(preset: BenchmarkPreset, q: nn.Module) -> nn.Module:
        return DeepT1(len(preset.train.times), **preset.baselines.get("DeepT1", {}))

    def predict(model: nn.Module, batch: dict[str, torch.Tensor], q: nn.Module) -> torch.Tensor:
        out = model(batch["kspace"], batch["csm"], batch["mask"])
        return DeepT1.to_params(out, reference_phase(out["images"]).to(out["r1"].dtype))

    def set_phase(model: nn.Module, phase: str) -> list[nn.Parameter]:
        model.set_stage(phase)
        return model.image_parameters() if phase == "image" else model.map_parameters()

    return LearnedSpec(
        "DeepT1", build, lambda m, o, b, q, preset: deept1_train_step(m, o, b, q), predict,
        phases=lambda total: [("image", total // 2), ("map", total - total // 2)], set_phase=set_phase,
    )  # fmt: skip


def _dopamine() -> LearnedSpec:
    from pinqi.baselines.dopamine import DOPAMINE, dopamine_train_step

    def build(preset: BenchmarkPreset, q: nn.Module) -> nn.Module:
        return DOPAMINE(q, **preset.baselines.get("DOPAMINE", {}))

    return LearnedSpec(
        "DOPAMINE", build, lambda m, o, b, q, preset: dopamine_train_step(m, o, b),
        lambda m, b, q: m(b["kspace"], b["csm"], b["mask"])["params"],
    )  # fmt: skip


def _correct() -> LearnedSpec:
    from pinqi.baselines.correct import CoRRECT, correct_train_step

    def build(preset: BenchmarkPreset, q: nn.Module) -> nn.Module:
        return CoRRECT(q, **preset.baselines.get("CoRRECT", {}))

    return LearnedSpec(
        "CoRRECT", build, lambda m, o, b, q, preset: correct_train_step(m, o, b, q),
        lambda m, b, q: m(b["kspace"], b["csm"], b["mask"])["params"],
    )  # fmt: skip


def _regression(mode: str) -> LearnedSpec:
    from .t1_regression import ImageReconstruction, regression_loss

    def build(preset: BenchmarkPreset, q: nn.Module) -> nn.Module:
        return ImageReconstruction(q, preset.train.model, mode)

    def step(
        model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], q: nn.Module,
        preset: BenchmarkPreset,
    ) -> torch.Tensor:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = regression_loss(model, model(batch["kspace"], batch["csm"], batch["mask"]), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
        optimizer.step()
        return loss.detach()

    name = "separate regression (h)" if mode == "separate" else "end-to-end regression (i)"
    return LearnedSpec(
        name, build, step, lambda m, b, q: m(b["kspace"], b["csm"], b["mask"])["params"],
        lr=lambda preset: preset.train.lr_networks,
    )  # fmt: skip


BASELINES: dict[str, Callable[[], LearnedSpec]] = {
    "MANTIS": _mantis,
    "DeepT1": _deept1,
    "DOPAMINE": _dopamine,
    "CoRRECT": _correct,
    "h": lambda: _regression("separate"),
    "i": lambda: _regression("end-to-end"),
}


# -- training ----------------------------------------------------------------------------------
def _signal_model(train: TrainConfig) -> nn.Module:
    return SaturationRecovery(torch.tensor(train.times, dtype=torch.float32))


def _log_seconds(out_dir: Path) -> float:
    path = out_dir / LOG_NAME
    if not path.is_file():
        return 0.0
    return sum(json.loads(line)["seconds"] for line in path.read_text().splitlines() if line)


def _finish(out_dir: Path, name: str, n_params: int, preset: BenchmarkPreset, wall: float, extra: dict[str, Any]) -> dict[str, Any]:
    stats = {
        "method": name,
        "parameters": n_params,
        "steps": preset.total_steps,
        "samples_seen": preset.samples_seen,
        "train_seconds": _log_seconds(out_dir),
        "wall_seconds_last_run": wall,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": torch.get_num_threads(),
        **extra,
    }
    write_json_atomic(out_dir / DONE, stats)
    return stats


def train_pinqi(train: TrainConfig, preset: BenchmarkPreset, out_dir: Path, name: str = "PINQI") -> dict[str, Any]:
    """Train (or resume) PINQI with ``train`` into ``out_dir``; writes ``done.json``."""
    started = time.perf_counter()
    trainer = Trainer(train, out_dir, resume=True, progress=False)
    trainer.run()
    return _finish(out_dir, name, count_parameters(trainer.model), preset, time.perf_counter() - started,
                   {"skipped_steps": trainer.skipped})


def train_learned(
    spec: LearnedSpec, preset: BenchmarkPreset, out_dir: Path, stop_after: int | None = None
) -> dict[str, Any] | None:
    """Train (or resume) a baseline on the benchmark stream; writes ``done.json`` at the end.

    ``stop_after``: return (None, no marker) after that many steps of this call, having written a
    checkpoint (used to test resumption).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cfg = preset.train
    q = _signal_model(cfg)
    torch.manual_seed(cfg.seed)  # network initialisation; the data stream has its own generators
    model = spec.build(preset, q)
    dataset = build_dataset(cfg)
    phases = spec.phases(preset.total_steps)
    fingerprint = json.dumps({"method": spec.name, "preset": preset.to_dict()}, sort_keys=True)
    step, skipped, resume_state = 0, 0, None
    if (out_dir / CHECKPOINT).is_file():
        payload = load_checkpoint(out_dir / CHECKPOINT, kind="benchmark")
        if payload["config"] != fingerprint:
            raise ValueError(f"{out_dir / CHECKPOINT} was written for another configuration; use a new --out")
        model.load_state_dict(payload["model"])
        step, skipped, resume_state = int(payload["step"]), int(payload["skipped"]), payload
        _truncate_log(out_dir, step)
    first, stop_at = 0, math.inf if stop_after is None else step + stop_after
    for phase_index, (phase, n_steps) in enumerate(phases):
        end = first + n_steps
        if step >= end:
            first = end
            continue
        params = spec.set_phase(model, phase)
        optimizer = torch.optim.AdamW(params, lr=spec.lr(preset), weight_decay=cfg.weight_decay)
        warmup = min(cfg.warmup_steps, max(1, n_steps // 10))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s, n=n_steps: learning_rate_factor(s, warmup, n))
        if resume_state is not None and int(resume_state["phase"]) == phase_index and step > first:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
        for s in range(step, end):
            batch = default_collate([dataset[i] for i in range(s * cfg.batch_size, (s + 1) * cfg.batch_size)])
            tic = time.perf_counter()
            try:
                loss = float(spec.step(model, optimizer, batch, q, preset))
            except FloatingPointError:
                loss, skipped = math.nan, skipped + 1
                optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            record = {"step": s, "phase": phase, "loss": loss, "lr": scheduler.get_last_lr()[0],
                      "seconds": time.perf_counter() - tic, "skipped": skipped}
            with open(out_dir / LOG_NAME, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            step = s + 1
            if step % cfg.checkpoint_every == 0 or step == end or step >= stop_at:
                save_checkpoint(out_dir / CHECKPOINT, {
                    "kind": "benchmark", "config": fingerprint, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "step": step, "phase": phase_index, "skipped": skipped,
                })  # fmt: skip
            if step >= stop_at:
                return None
        first = end
    return _finish(out_dir, spec.name, count_parameters(model), preset, time.perf_counter() - started,
                   {"skipped_steps": skipped})


def _truncate_log(out_dir: Path, step: int) -> None:
    path = out_dir / LOG_NAME
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] < step]
        path.write_text("".join(line + "\n" for line in kept))


# -- loading for evaluation --------------------------------------------------------------------
def load_pinqi_method(out_dir: Path) -> Predict:
    model = load_pinqi(out_dir / CHECKPOINT)
    return lambda batch: model(batch["kspace"], batch["csm"], batch["mask"]).final


def load_learned(spec: LearnedSpec, preset: BenchmarkPreset, out_dir: Path) -> Predict:
    q = _signal_model(preset.train)
    model = spec.build(preset, q)
    model.load_state_dict(load_checkpoint(out_dir / CHECKPOINT, kind="benchmark")["model"])
    if hasattr(model, "set_stage"):
        model.set_stage("joint")
    model.eval()
    return lambda batch: spec.predict(model, batch, q)


def classical_methods(preset: BenchmarkPreset, times: tuple[float, ...]) -> dict[str, Predict]:
    """Zero-filled + fit and CG-SENSE + fit (no training)."""
    from pinqi.baselines.classical import cg_sense_fit, zero_filled_fit

    q = _signal_model(preset.train.replace(times=tuple(times)))
    lam = preset.cg_sense_lambda
    return {
        "zero-filled + fit": lambda b: zero_filled_fit(b["kspace"], b["csm"], b["mask"], q).params,
        "CG-SENSE + fit": lambda b: cg_sense_fit(b["kspace"], b["csm"], b["mask"], q, lam=lam).params,
    }
