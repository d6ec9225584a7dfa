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
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import default_collate

from simulation import SaturationRecovery, T1MappingDataset, load_anatomy

from .common.checkpoint import config_json, load_checkpoint, save_checkpoint
from .common.distributed import DistributedContext, init_distributed
from .common.seeding import seeded
from .common.trainer import TrainerBase, learning_rate_factor
from .config import TrainConfig
from .losses import in_scale_units, masked_mse, pinqi_loss
from .metrics import nrmse
from .model import PINQI

__all__ = ["Trainer", "build_model", "build_dataset", "build_validation_set", "build_optimizer", "compute_loss",
           "load_pinqi", "SHIPPED_MODEL", "BEST_NAME"]

BEST_NAME = "best.pt"


def build_model(config: TrainConfig) -> PINQI:
    """PINQI with a saturation-recovery signal model at the configured times.

    The network initialisation is seeded with ``config.seed`` inside a forked RNG: the global
    RNG is left as it was.
    """
    times = torch.tensor(config.times, dtype=torch.float32)
    return seeded(config.seed, lambda: PINQI(SaturationRecovery(times), config.model))


def build_dataset(
    config: TrainConfig, split: str = "train", length: int | None = None, **changes: Any
) -> T1MappingDataset:
    """The synthetic k-space training stream of ``config`` (``changes`` override dataset arguments)."""
    total = config.batch_size * (config.steps + config.pretrain_steps)
    anatomy_kwargs: dict[str, Any] = {}
    if config.anatomy == "phantom":
        anatomy_kwargs["shape"] = (config.image_size, config.image_size)
    anatomy = load_anatomy(config.anatomy, split, **anatomy_kwargs)
    arguments: dict[str, Any] = dict(
        length=length if length is not None else total, seed=config.seed, image_size=config.image_size,
        n_coils=config.n_coils, times=config.times, acceleration=config.acceleration, wide_t1=config.wide_t1,
        inserts=config.inserts, estimated_csm=config.estimated_csm, intensity_scale=config.intensity_scale,
        global_phase=config.global_phase, calibration_lines=config.calibration_lines, csm_method=config.csm_method,
    )
    return T1MappingDataset(anatomy, **{**arguments, **changes})


def build_validation_set(config: TrainConfig) -> list[dict[str, torch.Tensor]]:
    """The fixed validation samples: the validation split, its own seed, one acceleration, brain
    distribution (no wide T1s or inserts), coil maps estimated whenever training estimates them."""
    dataset = build_dataset(
        config, "val", config.validation_samples, seed=config.seed + 104729, acceleration=config.validation_acceleration,
        wide_t1=0.0, inserts=0.0, estimated_csm=1.0 if config.estimated_csm > 0 else 0.0,
    )
    return [dataset[i] for i in range(len(dataset))]


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


class Trainer(TrainerBase):
    """Runs (or resumes) one PINQI training run into ``out_dir`` (see :mod:`pinqi.common.trainer`).

    Parameters
    ----------
    config
        The run's configuration (stored in every checkpoint).
    out_dir
        Receives ``checkpoint.pt``, ``train_log.jsonl`` and (with validation) ``best.pt``.
    resume
        Continue from ``out_dir/checkpoint.pt`` when it exists; its configuration must equal
        ``config``.
    progress
        Show a tqdm progress bar (main process only).
    overwrite
        Start afresh in a folder that already holds a checkpoint (without it, and without
        ``resume``, such a folder is refused so that no run is lost by accident).
    """

    kind: ClassVar[str] = "pinqi"
    config_type = TrainConfig
    config: TrainConfig

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        self._open_run_folder(config, out_dir, resume, overwrite, progress, init_distributed())
        self.model = build_model(config).to(self.ctx.device)
        self.optimizer = build_optimizer(self.model, config)
        total = config.steps + config.pretrain_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: learning_rate_factor(s, config.warmup_steps, total)
        )
        self.dataset = build_dataset(config)
        self.validation_set = build_validation_set(config) if config.validation_every > 0 else []
        self.best_validation = math.inf
        self._start(extra_files=(BEST_NAME,))
        self.wrapped: nn.Module = self.model
        if self.ctx.world_size > 1:
            self.wrapped = DistributedDataParallel(self.model, find_unused_parameters=_has_unused_parameters(config))

    @property
    def total_steps(self) -> int:
        return self.config.steps + self.config.pretrain_steps

    # -- the task ------------------------------------------------------------------------------
    def batch(self, step: int) -> dict[str, torch.Tensor]:
        samples = [self.dataset[i] for i in _batch_indices(step, self.config, self.ctx)]
        return _to_device(default_collate(samples), self.ctx.device)

    def loss(self, step: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return compute_loss(self.wrapped, batch, step, self.config)

    def phase(self, step: int) -> str:
        return "pretrain" if step < self.config.pretrain_steps else "train"

    def record_extras(self) -> dict[str, Any]:
        return self.model.lambdas().as_lists()

    def after_backward(self, step: int) -> None:
        if step < self.config.pretrain_steps:
            _allreduce_gradients(self.model, self.ctx)

    def state_extras(self) -> dict[str, Any]:
        return {"best_validation": self.best_validation, "torch_rng": torch.get_rng_state()}

    def restore_extras(self, payload: dict[str, Any]) -> None:
        self.best_validation = float(payload.get("best_validation", math.inf))
        torch.set_rng_state(payload["torch_rng"])

    def initialise_from(self, path: str | Path) -> None:
        """Copy the model weights of another PINQI checkpoint (same architecture) before step 0."""
        payload = load_checkpoint(path, kind="pinqi")
        try:
            self.model.load_state_dict(payload["model"])
        except RuntimeError as error:
            raise ValueError(f"{path}: its weights do not fit this configuration's networks: {error}") from error

    # -- validation ----------------------------------------------------------------------------
    def after_step(self, record: dict[str, Any]) -> None:
        """Every ``validation_every`` steps and at the end: log the validation T1 nRMSE, keep the best."""
        every = self.config.validation_every
        if every and (self.step % every == 0 or self.step == self.total_steps) and self.ctx.is_main:
            record["val_t1_nrmse"] = self.validate()
            if record["val_t1_nrmse"] < self.best_validation:
                self._save_best(record["val_t1_nrmse"])

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


SHIPPED_MODEL = Path(__file__).resolve().parent / "weights" / "pinqi_t1.pt"


def load_pinqi(path: str | Path | None = None, map_location: str | torch.device = "cpu") -> PINQI:
    """A trained PINQI in eval mode, from a checkpoint or (``path=None``) the shipped model.

    The training configuration is attached as ``model.train_config``
    (:class:`~pinqi.config.TrainConfig`); the saturation times the model was trained
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
