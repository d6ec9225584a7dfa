"""The one training loop of the project: resume, log, skip, validate, save atomically.

:class:`TrainerBase` owns what every training run needs; a task (PINQI in
:mod:`pinqi.training`, W2Q in :mod:`pinqi.w2q.training`) supplies the model, optimiser, scheduler
and data, and implements :meth:`TrainerBase.batch` and :meth:`TrainerBase.loss`.

Run folder
    ``checkpoint.pt`` (written atomically every ``config.checkpoint_every`` steps and at the end)
    and ``train_log.jsonl`` (one JSON record per step). A folder that already holds a checkpoint
    is refused unless the run resumes it (its stored configuration must equal the requested one)
    or ``overwrite`` starts afresh.
Resume
    Model, optimiser, scheduler, step and skip count come back from the checkpoint; log lines of
    later steps are dropped (they are about to be redone), a truncated last line is tolerated,
    and the log is rewritten atomically. The data stream is a pure function of the step, so a
    resumed run sees the batches an uninterrupted run would have seen.
Skipping
    A batch with NaN/Inf values, a non-finite loss or a non-finite gradient norm skips the
    optimiser step (counted in ``skipped``); the scheduler still advances.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import config_json, load_checkpoint, save_checkpoint, write_text_atomic
from .config_mixin import ConfigMixin
from .distributed import DistributedContext

__all__ = ["TrainerBase", "learning_rate_factor", "non_finite_entries", "CHECKPOINT_NAME", "LOG_NAME"]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def non_finite_entries(batch: dict[str, torch.Tensor]) -> list[str]:
    """The keys of ``batch`` whose floating-point or complex tensors hold NaN or Inf."""
    return [
        k for k, v in batch.items()
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())
    ]  # fmt: skip


class TrainerBase(ABC):
    """Runs (or resumes) one training run into ``out_dir`` (module docstring).

    Subclasses set :attr:`kind` and :attr:`config_type`, build ``model``, ``optimizer``,
    ``scheduler`` in their ``__init__`` between :meth:`_open_run_folder` and :meth:`_start`, and
    implement :meth:`batch` and :meth:`loss`. ``config`` must have ``checkpoint_every``,
    ``grad_clip`` and a ``total_steps`` (given by :meth:`total_steps`).
    """

    kind: ClassVar[str]
    """The checkpoint's ``kind`` entry ("pinqi", "w2q")."""
    config_type: ClassVar[type[ConfigMixin]]
    description: ClassVar[str] = "train"

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def _open_run_folder(
        self, config: Any, out_dir: str | Path, resume: bool, overwrite: bool, progress: bool,
        ctx: DistributedContext | None = None,
    ) -> None:
        """Check the run folder and set the run's state to step 0 (before the model is built)."""
        self.config = config
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"output folder {self.out_dir} exists and is not a folder")
        self._existing = (self.out_dir / CHECKPOINT_NAME).is_file()
        if self._existing and not resume and not overwrite:
            raise ValueError(
                f"{self.out_dir} already holds a checkpoint; pass --resume to continue it or --overwrite to start afresh"
            )
        self._resume, self._overwrite = resume, overwrite
        self.ctx = ctx if ctx is not None else DistributedContext()
        self.progress = progress and self.ctx.is_main
        self.step = 0
        self.skipped = 0

    def _start(self, extra_files: tuple[str, ...] = ()) -> bool:
        """Restore the checkpoint (resume) or clear the folder (overwrite); whether it restored."""
        if self._resume and self._existing:
            self._restore(self.out_dir / CHECKPOINT_NAME)
            return True
        if self._overwrite and self.ctx.is_main:
            for name in (CHECKPOINT_NAME, LOG_NAME, *extra_files):
                (self.out_dir / name).unlink(missing_ok=True)
        return False

    # -- what a task supplies ------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """Steps of the whole run."""
        return int(self.config.total_steps)

    @abstractmethod
    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step`` (a pure function of the seed and the step), on the device."""

    @abstractmethod
    def loss(self, step: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar training loss of ``batch`` at ``step``."""

    def phase(self, step: int) -> str:
        """The name of the training phase of ``step`` (logged)."""
        return "train"

    def record_extras(self) -> dict[str, Any]:
        """Values added to every log record (e.g. the current λ)."""
        return {}

    def state_extras(self) -> dict[str, Any]:
        """Entries added to the checkpoint after the common ones."""
        return {}

    def restore_extras(self, payload: dict[str, Any]) -> None:
        """Read back what :meth:`state_extras` wrote."""

    def after_backward(self, step: int) -> None:
        """Called between ``loss.backward()`` and gradient clipping."""

    def after_step(self, record: dict[str, Any]) -> None:
        """Validation hook, called after every step with its record (which it may extend)."""

    def finish(self) -> bool:
        """Called when a run stops; returns whether the state changed and must be saved."""
        return False

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The checkpoint payload."""
        return {
            "kind": self.kind,
            "config": config_json(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "skipped": self.skipped,
            **self.state_extras(),
        }

    def save(self) -> None:
        """Write ``checkpoint.pt`` atomically (main process; every process waits for it)."""
        if self.ctx.is_main:
            save_checkpoint(self.out_dir / CHECKPOINT_NAME, self.state())
        self.ctx.barrier()

    def _restore(self, path: Path) -> None:
        payload = load_checkpoint(path, kind=self.kind)
        stored = self.config_type.from_dict(json.loads(payload["config"]))
        if stored != self.config:
            raise ValueError(
                f"{path} was written with a different configuration; resume with the same preset/config "
                f"or start a new output directory (stored: {stored}, requested: {self.config})"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = int(payload["step"])
        self.skipped = int(payload["skipped"])
        self.restore_extras(payload)
        self._truncate_log(self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines of steps at or after ``step``; a truncated last line is dropped too."""
        path = self.out_dir / LOG_NAME
        if not self.ctx.is_main or not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = []
        for number, line in enumerate(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines) - 1:
                    log.warning("%s: dropped a truncated last line", path)
                    continue
                raise ValueError(f"{path}: line {number + 1} is not JSON; the log is damaged") from None
            if record.get("step", step) < step:
                kept.append(line)
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    def append_log(self, record: dict[str, Any]) -> None:
        """Append one JSON record to ``train_log.jsonl`` (main process)."""
        if self.ctx.is_main:
            with open(self.out_dir / LOG_NAME, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    # -- loop ----------------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """``(step, batch)`` from the current step to the end."""
        for step in range(self.step, self.total_steps):
            yield step, self.batch(step)

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One optimiser step; non-finite data, loss or gradient skip it (counted)."""
        self.model.train()
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        bad = non_finite_entries(batch)
        if bad:
            loss = torch.tensor(float("nan"), device=self.ctx.device)
            log.warning("step %d: non-finite values in the batch's %s", step, ", ".join(bad))
        else:
            loss = self.loss(step, batch)
        # the mean over processes is what an equivalent single-process run computes, and every
        # process must take the same skip decision
        mean_loss = self.ctx.mean(loss.detach().clone())
        finite = bool(torch.isfinite(mean_loss))
        grad_norm = float("nan")
        if finite:
            loss.backward()
            self.after_backward(step)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))
            finite = math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
        else:
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            log.warning("step %d: non-finite loss or gradient, step skipped (%d so far)", step, self.skipped)
        with warnings.catch_warnings():
            # a skipped first step calls the scheduler before any optimizer.step(): intended
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        return {
            "step": step,
            "phase": self.phase(step),
            "loss": float(mean_loss),
            "grad_norm": grad_norm,
            "lr": self.scheduler.get_last_lr()[0],
            "skipped": self.skipped,
            "seconds": time.perf_counter() - started,
            **self.record_extras(),
        }

    def run(self, stop_after: int | None = None, max_seconds: float | None = None) -> list[dict[str, Any]]:
        """Train to the end, or for ``stop_after`` more steps, or until ``max_seconds`` of wall time
        have passed (checked after each step; e.g. a GPU lease); returns this call's log records.
        A checkpoint is written whenever the loop stops, so ``--resume`` continues exactly."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        total = self.total_steps
        end = total if stop_after is None else min(total, self.step + stop_after)
        records: list[dict[str, Any]] = []
        saved = True
        started = time.monotonic()
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, desc=self.description)
        for step in range(self.step, end):
            if max_seconds is not None and records and time.monotonic() - started >= max_seconds:
                break
            record = self.train_step(step, self.batch(step))
            self.step = step + 1
            self.after_step(record)
            records.append(record)
            self.append_log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            saved = self.step % self.config.checkpoint_every == 0 and self.step < total
            if saved:
                self.save()
        bar.close()
        if self.finish() or (records and not saved):
            self.save()
        return records
