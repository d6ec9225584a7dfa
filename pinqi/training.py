"""Training loop of PINQI: AdamW, warm-up + cosine schedule, atomic checkpoints, exact resume, DDP.

The data stream is a pure function of the step: step ``s`` uses samples ``s·B … s·B + B − 1`` of
a :class:`simulation.T1MappingDataset` seeded with ``config.seed``, and every sample is itself a
pure function of (seed, index). Resuming from a checkpoint therefore replays exactly the batches
an uninterrupted run would have seen, and the next losses are identical.

Multi-process data parallel: launch with ``torchrun --nproc-per-node N -m pinqi train ...``; each
process takes every N-th sample of the global batch (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import default_collate
from tqdm import tqdm

from simulation import SaturationRecovery, T1MappingDataset, load_anatomy

from .checkpoint import config_json, load_checkpoint, save_checkpoint, write_text_atomic
from .losses import in_scale_units, masked_mse, pinqi_loss
from .metrics import nrmse
from .model import PINQI
from .training_config import TrainConfig

log = logging.getLogger("pinqi")
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
LOG_NAME = "train_log.jsonl"


@dataclass
class DistributedContext:
    """Rank and world size of this process (1 process when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistributedContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return DistributedContext(device=device)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return DistributedContext(rank=rank, world_size=dist.get_world_size(), device=device)


def build_model(config: TrainConfig) -> PINQI:
    """PINQI with a saturation-recovery signal model at the configured times.

    The network initialisation is seeded with ``config.seed`` inside a forked RNG: the global
    RNG is left as it was.
    """
    times = torch.tensor(config.times, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return PINQI(SaturationRecovery(times), config.model)


def build_dataset(config: TrainConfig, split: str = "train", length: int | None = None) -> T1MappingDataset:
    """The synthetic k-space training stream of ``config``."""
    total = config.batch_size * (config.steps + config.pretrain_steps)
    anatomy_kwargs: dict[str, Any] = {}
    if config.anatomy == "phantom":
        anatomy_kwargs["shape"] = (config.image_size, config.image_size)
    anatomy = load_anatomy(config.anatomy, split, **anatomy_kwargs)
    return T1MappingDataset(
        anatomy,
        length=length if length is not None else total,
        seed=config.seed,
        image_size=config.image_size,
        n_coils=config.n_coils,
        times=config.times,
        acceleration=config.acceleration,
        wide_t1=config.wide_t1,
        inserts=config.inserts,
        estimated_csm=config.estimated_csm,
        intensity_scale=config.intensity_scale,
        global_phase=config.global_phase,
    )


def build_validation_set(config: TrainConfig) -> list[dict[str, torch.Tensor]]:
    """The fixed validation samples: the validation split, its own seed, one acceleration."""
    dataset = build_dataset(config, split="val", length=config.validation_samples)
    dataset = T1MappingDataset(
        dataset.anatomy,
        length=config.validation_samples,
        seed=config.seed + 104729,
        image_size=config.image_size,
        n_coils=config.n_coils,
        times=config.times,
        acceleration=config.validation_acceleration,
        estimated_csm=1.0 if config.estimated_csm > 0 else 0.0,
        intensity_scale=config.intensity_scale,
        global_phase=config.global_phase,
    )
    return [dataset[i] for i in range(len(dataset))]


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: PINQI, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with separate learning rates for the networks and the λ."""
    return torch.optim.AdamW(
        [
            {"params": model.network_parameters(), "lr": config.lr_networks},
            {"params": model.lambda_parameters(), "lr": config.lr_lambdas, "weight_decay": 0.0},
        ],
        weight_decay=config.weight_decay,
    )


def _batch_indices(step: int, config: TrainConfig, ctx: DistributedContext) -> list[int]:
    first = step * config.batch_size
    return [first + j for j in range(ctx.rank, config.batch_size, ctx.world_size)]


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def compute_loss(model: nn.Module, batch: dict[str, torch.Tensor], step: int, config: TrainConfig) -> torch.Tensor:
    """The training loss of one batch; P_θ pretraining for the first ``pretrain_steps`` steps."""
    core: PINQI = model.module if isinstance(model, DistributedDataParallel) else model
    if step < config.pretrain_steps:
        # P_θ pretraining on images interpolated at random between zero-filled and ground truth;
        # it bypasses the DDP wrapper, so under DDP the gradient is all-reduced by hand
        alpha = _interpolation_weights(step, batch["images"].shape[0], config)
        prediction, scale = core.pretrain_prediction(
            batch["kspace"], batch["csm"], batch["mask"], batch["images"], alpha
        )
        return masked_mse(
            in_scale_units(prediction, scale), in_scale_units(batch["params"], scale),
            batch["brain_mask"], config.outside_weight,
        )
    output = model(batch["kspace"], batch["csm"], batch["mask"])
    return pinqi_loss(output, batch["params"], batch["brain_mask"], config.outside_weight, config.deep_supervision)


def _interpolation_weights(step: int, n: int, config: TrainConfig) -> torch.Tensor:
    generator = torch.Generator().manual_seed(config.seed * 7919 + step)
    return torch.rand(n, generator=generator)


def _has_unused_parameters(config: TrainConfig) -> bool:
    """Whether an ablation leaves some λ or network unused (DDP must then search the graph)."""
    m = config.model
    return not (
        m.use_signal_model
        and m.use_image_regulariser
        and m.use_parameter_regulariser
        and m.fit_mode in ("implicit", "unrolled")
        and not m.shared_regularisers
    )


def _allreduce_gradients(model: nn.Module, ctx: DistributedContext) -> None:
    if ctx.world_size <= 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)


class Trainer:
    """Runs (or resumes) one training run into ``out_dir``.

    Parameters
    ----------
    config
        The run's configuration (stored in every checkpoint).
    out_dir
        Receives ``checkpoint.pt`` and ``train_log.jsonl``.
    resume
        Continue from ``out_dir/checkpoint.pt`` when it exists; its configuration must equal
        ``config``.
    progress
        Show a tqdm progress bar (main process only).
    overwrite
        Start afresh in a folder that already holds a checkpoint (without it, and without
        ``resume``, such a folder is refused so that no run is lost by accident).
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"output folder {self.out_dir} exists and is not a folder")
        existing = (self.out_dir / CHECKPOINT_NAME).is_file()
        if existing and not resume and not overwrite:
            raise ValueError(
                f"{self.out_dir} already holds a checkpoint; pass --resume to continue it or --overwrite to start afresh"
            )
        self.ctx = init_distributed()
        self.model = build_model(config).to(self.ctx.device)
        self.optimizer = build_optimizer(self.model, config)
        total = config.steps + config.pretrain_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: learning_rate_factor(s, config.warmup_steps, total)
        )
        self.dataset = build_dataset(config)
        self.validation_set = build_validation_set(config) if config.validation_every > 0 else []
        self.step = 0
        self.skipped = 0
        self.best_validation = math.inf
        self.progress = progress and self.ctx.is_main
        if resume and existing:
            self._restore(self.out_dir / CHECKPOINT_NAME)
        elif overwrite and self.ctx.is_main:
            for name in (CHECKPOINT_NAME, LOG_NAME, BEST_NAME):
                (self.out_dir / name).unlink(missing_ok=True)
        self.wrapped: nn.Module = self.model
        if self.ctx.world_size > 1:
            self.wrapped = DistributedDataParallel(self.model, find_unused_parameters=_has_unused_parameters(config))

    @property
    def total_steps(self) -> int:
        return self.config.steps + self.config.pretrain_steps

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "kind": "pinqi",
            "config": config_json(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "skipped": self.skipped,
            "best_validation": self.best_validation,
            "torch_rng": torch.get_rng_state(),
        }

    def save(self) -> None:
        if self.ctx.is_main:
            save_checkpoint(self.out_dir / CHECKPOINT_NAME, self.state())
        if self.ctx.world_size > 1:
            dist.barrier()

    def _restore(self, path: Path) -> None:
        payload = load_checkpoint(path, kind="pinqi")
        stored = TrainConfig.from_dict(json.loads(payload["config"]))
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
        self.best_validation = float(payload.get("best_validation", math.inf))
        torch.set_rng_state(payload["torch_rng"])
        self._truncate_log(self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines of steps after the checkpoint (they are about to be redone).

        A truncated last line (a run killed while writing it) is dropped; the log is rewritten
        atomically.
        """
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

    def initialise_from(self, path: str | Path) -> None:
        """Copy the model weights of another PINQI checkpoint (same architecture) before step 0."""
        payload = load_checkpoint(path, kind="pinqi")
        try:
            self.model.load_state_dict(payload["model"])
        except RuntimeError as error:
            raise ValueError(f"{path}: its weights do not fit this configuration's networks: {error}") from error

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> float:
        """Mean T1 nRMSE inside the brain over the validation samples (the model's own eval mode)."""
        was_training = self.model.training
        self.model.eval()
        values = []
        with torch.no_grad():
            for first in range(0, len(self.validation_set), self.config.batch_size):
                chunk = self.validation_set[first : first + self.config.batch_size]
                batch = _to_device(default_collate(chunk), self.ctx.device)
                output = self.model(batch["kspace"], batch["csm"], batch["mask"])
                t1 = 1.0 / output.final[:, 2].clamp_min(1e-3)
                values.append(nrmse(t1, 1.0 / batch["params"][:, 2], batch["brain_mask"]))
        self.model.train(was_training)
        return float(torch.cat(values).mean())

    def _save_best(self, value: float) -> None:
        self.best_validation = value
        save_checkpoint(
            self.out_dir / BEST_NAME,
            {"kind": "pinqi", "config": config_json(self.config), "model": self.model.state_dict(),
             "step": self.step, "validation_t1_nrmse": value},
        )

    # -- loop ----------------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        for step in range(self.step, self.total_steps):
            samples = [self.dataset[i] for i in _batch_indices(step, self.config, self.ctx)]
            yield step, _to_device(default_collate(samples), self.ctx.device)

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One optimiser step; non-finite data, loss or gradient skip it (counted)."""
        self.model.train()
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        bad = [k for k, v in batch.items() if v.is_floating_point() or v.is_complex() if not bool(torch.isfinite(v).all())]
        if bad:
            loss = torch.tensor(float("nan"), device=self.ctx.device)
            log.warning("step %d: non-finite values in the batch's %s", step, ", ".join(bad))
        else:
            loss = compute_loss(self.wrapped, batch, step, self.config)
        # the mean over processes is what an equivalent single-process run computes, and every
        # process must take the same skip decision
        mean_loss = loss.detach().clone()
        if self.ctx.world_size > 1:
            dist.all_reduce(mean_loss, op=dist.ReduceOp.AVG)
        finite = bool(torch.isfinite(mean_loss))
        grad_norm = float("nan")
        if finite:
            loss.backward()
            if step < self.config.pretrain_steps:
                _allreduce_gradients(self.model, self.ctx)
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
        lambdas = {k: v.detach().cpu().tolist() for k, v in self.model.lambdas().items()}
        return {
            "step": step,
            "phase": "pretrain" if step < self.config.pretrain_steps else "train",
            "loss": float(mean_loss),
            "grad_norm": grad_norm,
            "lr": self.scheduler.get_last_lr()[0],
            "skipped": self.skipped,
            "seconds": time.perf_counter() - started,
            **lambdas,
        }

    def run(self, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Train to the end (or for ``stop_after`` more steps); returns this call's log records."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        remaining = self.total_steps - self.step if stop_after is None else stop_after
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress, desc="train")
        for step, batch in self.batches():
            if len(records) >= remaining:
                break
            record = self.train_step(step, batch)
            self.step = step + 1
            records.append(record)
            every = self.config.validation_every
            if every and (self.step % every == 0 or self.step == self.total_steps) and self.ctx.is_main:
                record["val_t1_nrmse"] = self.validate()
                if record["val_t1_nrmse"] < self.best_validation:
                    self._save_best(record["val_t1_nrmse"])
            if self.ctx.is_main:
                with open(self.out_dir / LOG_NAME, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            if self.step % self.config.checkpoint_every == 0 or self.step == self.total_steps:
                self.save()
        bar.close()
        if records and self.step % self.config.checkpoint_every != 0 and self.step != self.total_steps:
            self.save()
        return records


SHIPPED_MODEL = Path(__file__).resolve().parent / "weights" / "pinqi_t1.pt"


def load_pinqi(path: str | Path | None = None, map_location: str | torch.device = "cpu") -> PINQI:
    """A trained PINQI in eval mode, from a checkpoint or (``path=None``) the shipped model.

    The training configuration is attached as ``model.train_config``
    (:class:`~pinqi.training_config.TrainConfig`); the saturation times the model was trained
    with are ``model.train_config.times`` [s].
    """
    path = SHIPPED_MODEL if path is None else Path(path)
    payload = load_checkpoint(path, kind="pinqi")
    config = TrainConfig.from_dict(json.loads(payload["config"]))
    model = build_model(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit the stored configuration: {error}") from error
    model.train_config = config
    return model.to(map_location).eval()
