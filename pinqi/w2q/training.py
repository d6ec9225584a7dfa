"""Training of W2Q and of its two baselines: the trainer, validation, loading and exporting weights.

``pinqi train --task w2q --mode supervised|self-supervised [--preset cpu|paper|micro]`` calls
:func:`train_w2q`. The model is chosen by ``model_type`` (a ``--config`` JSON key):
``"w2q"`` (protocol-embedding network + K fit/refine iterations), ``"embedding"`` (the same
network without the fit layer) or ``"unet"`` (plain U-Net, no sequence information).

Data
    :class:`BandedProtocolDataset`, a :class:`simulation.WeightedImageDataset` whose protocols
    are drawn from the (deliberately wider than clinical) :class:`~pinqi.w2q.protocols.
    ProtocolRanges` with a band of every continuous parameter held out: each of TR, TE, TI and
    FA is drawn from the lower 40 % or the upper 40 % of its range for training, and from the
    middle 20 % (``held_out``) for validation and test — so validation/test protocols (which
    look like clinical ones) are never seen in training. Anatomy: ``mni152`` train / val / test
    slabs. Step ``s`` uses samples ``s·B .. s·B + B − 1``: resuming replays the exact stream.
Contrast dropout
    With probability ``contrast_dropout`` a sample keeps a random non-empty proper subset of its
    contrasts (uniform over the 6 subsets), else all three. Dropped contrasts are hidden from
    the network and the fit; the self-supervised loss still compares against them.
Losses
    :mod:`pinqi.w2q.losses` (supervised or self-supervised, ``mode``).
Schedule
    ``pretrain_steps`` steps train the network alone (its loss on ``p_reg⁰``; cheap; λ unused),
    then ``steps`` steps the whole model end to end; AdamW, each phase with its own linear warm-up
    and cosine decay (:func:`phase_factor`). ``init_from`` starts from another run's weights
    (every tensor whose name and shape match), e.g. to train the full model from a network run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import default_collate

from ..common.checkpoint import load_checkpoint, save_checkpoint
from ..common.seeding import seeded
from ..common.trainer import CHECKPOINT_NAME, TrainerBase, learning_rate_factor
from ..metrics import map_metrics
from .config import W2QTrainConfig, load_w2q_config
from .data import build_dataset, contrast_availability
from .losses import self_supervised_loss, supervised_loss
from .model import W2Q
from .protocols import PARAMETERS

__all__ = ["build_w2q", "phase_factor", "W2QTrainer", "train_w2q", "load_w2q", "export_weights", "evaluate"]


def phase_factor(step: int, config: W2QTrainConfig, network: bool) -> float:
    """Learning-rate factor: warm-up + cosine over the network phase, then a fresh warm-up + cosine
    over the full phase (networks at ``lr_full``, λ at ``lr_lambdas``)."""
    if step < config.pretrain_steps:
        return learning_rate_factor(step, config.warmup_steps, config.pretrain_steps)
    factor = learning_rate_factor(step - config.pretrain_steps, config.full_warmup_steps, config.steps)
    return factor * (config.lr_full / config.lr if network else 1.0)


def build_w2q(config: W2QTrainConfig) -> W2Q:
    """A freshly initialised model (seeded by ``config.seed``; the global RNG is left as it was)."""
    return seeded(config.seed, lambda: W2Q(config.model))


@torch.no_grad()
def evaluate(model: W2Q, samples: list[dict[str, torch.Tensor]], batch_size: int = 8) -> dict[str, dict[str, float]]:
    """:func:`map_metrics` of the model's final maps over ``samples`` (all contrasts available)."""
    model.eval()
    preds, targets, masks = [], [], []
    for i in range(0, len(samples), batch_size):
        b = default_collate(samples[i : i + batch_size])
        out = model(b["images"], b["sequence_params"], b["sequence_types"], b["brain_mask"])
        preds.append(out.final)
        targets.append(b["params"])
        masks.append(b["brain_mask"])
    return map_metrics(torch.cat(preds), torch.cat(targets), torch.cat(masks), PARAMETERS)


class W2QTrainer(TrainerBase):
    """Runs or resumes one W2Q training run into ``out_dir`` (see :mod:`pinqi.common.trainer`).

    ``resume`` continues the folder's checkpoint (same configuration); ``overwrite`` starts afresh
    in a folder that holds one (without either such a folder is refused). After the last step the
    model is validated on held-out protocols and the checkpoint marked as trained.
    """

    kind: ClassVar[str] = "w2q"
    config_type = W2QTrainConfig
    config: W2QTrainConfig

    def __init__(self, config: W2QTrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
                 overwrite: bool = False) -> None:
        self._open_run_folder(config, out_dir, resume, overwrite, progress)
        self.description = f"train {config.model_type}"
        self.model = build_w2q(config)
        self.optimizer = torch.optim.AdamW(
            [{"params": self.model.network_parameters(), "lr": config.lr},
             {"params": self.model.lambda_parameters(), "lr": config.lr_lambdas, "weight_decay": 0.0}],
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [lambda s: phase_factor(s, config, True), lambda s: phase_factor(s, config, False)])
        self.dataset = build_dataset(config, "train", config.batch_size * config.total_steps)
        self.validation: dict[str, Any] | None = None
        self.seconds = 0.0
        if not self._start() and config.init_from:
            self._initialise_from(Path(config.init_from))

    def _initialise_from(self, path: Path) -> None:
        """Copy every weight of ``path``'s model whose name and shape match (e.g. a pretrained network);
        the learned λ only with ``config.init_lambdas``."""
        source = load_checkpoint(path, kind="w2q")["model"]
        own = self.model.state_dict()
        matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape
                   and (self.config.init_lambdas or k != "raw_lambda")}
        if not matched:
            raise ValueError(f"{path}: no weight matches this model; cannot initialise from it")
        self.model.load_state_dict(matched, strict=False)

    # -- the task ------------------------------------------------------------------------------
    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The samples of ``step`` with their contrast availability ``available`` (pure functions of seed and step)."""
        b = self.config.batch_size
        batch = default_collate([self.dataset[step * b + j] for j in range(b)])
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        return {**batch, "available": contrast_availability(b, 3, self.config.contrast_dropout, g)}

    def loss(self, step: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        iterations = 0 if step < self.config.pretrain_steps else None
        out = self.model(batch["images"], batch["sequence_params"], batch["sequence_types"], batch["brain_mask"],
                         batch["available"], n_iterations=iterations)
        if self.config.mode == "supervised":
            return supervised_loss(out, batch["params"], batch["brain_mask"], self.config)
        return self_supervised_loss(self.model, out, self.config)

    def phase(self, step: int) -> str:
        return "network" if step < self.config.pretrain_steps else "full"

    def record_extras(self) -> dict[str, Any]:
        return {"lambda": self.model.lambdas().detach().tolist()}

    def state_extras(self) -> dict[str, Any]:
        trained = self.step >= self.config.total_steps and self.validation is not None
        return {"model_type": self.config.model_type, "trained": trained, "seconds": self.seconds,
                "validation": json.dumps(self.validation) if self.validation is not None else ""}

    def restore_extras(self, payload: dict[str, Any]) -> None:
        self.seconds = float(payload.get("seconds", 0.0))
        self.validation = json.loads(payload["validation"]) if payload.get("validation") else None

    # -- validation ----------------------------------------------------------------------------
    def after_step(self, record: dict[str, Any]) -> None:
        self.seconds += record["seconds"]

    def validate(self) -> dict[str, Any]:
        data = build_dataset(self.config, "val", self.config.val_samples, seed=self.config.seed + 1)
        return evaluate(self.model, [data[i] for i in range(len(data))], self.config.batch_size)

    def finish(self) -> bool:
        """After the last step: validate once on held-out protocols (logged); marks the run trained."""
        if self.step < self.config.total_steps or self.validation is not None:
            return False
        self.validation = self.validate()
        self.append_log({"step": self.step, "validation": self.validation})
        return True

    def run(self, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Train to the end (or ``stop_after`` more steps), then validate; returns this call's log records."""
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        return super().run(stop_after)


def train_w2q(args: argparse.Namespace) -> W2QTrainer:
    """``pinqi train --task w2q``: args.preset, args.config, args.out, args.resume, args.steps,
    args.no_progress, args.mode (``--steps`` overrides the number of full-model steps)."""
    config = load_w2q_config(args.preset, args.config, mode=getattr(args, "mode", None))
    if getattr(args, "steps", None) is not None:
        config = config.replace(**({"steps": args.steps} if config.steps else {"pretrain_steps": args.steps}))
    out = args.out or Path("runs") / f"w2q-{args.preset}-{config.model_type}-{config.mode}"
    trainer = W2QTrainer(config, out, resume=bool(args.resume), progress=not getattr(args, "no_progress", False),
                         overwrite=bool(getattr(args, "overwrite", False)))
    trainer.run()
    v = trainer.validation or {}
    summary = ", ".join(f"{k} MAPE {m['mape']:.2f}%" for k, m in v.items())
    print(f"trained {config.model_type} ({config.mode}) to step {trainer.step} in {trainer.seconds:.0f} s; "
          f"validation (held-out protocols): {summary}; checkpoint {Path(out) / CHECKPOINT_NAME}")
    return trainer


def load_w2q(path: str | Path, require_trained: bool = True) -> tuple[W2Q, W2QTrainConfig, dict[str, Any]]:
    """A W2Q (or baseline) model from a checkpoint, in eval mode, with its config and payload.

    Raises ValueError for files that are not W2Q checkpoints, whose weights do not fit their
    configuration, or (``require_trained``) that are not marked as trained (finished run with
    validation metrics and > 0 steps).
    """
    payload = load_checkpoint(path, kind="w2q")
    try:
        config = W2QTrainConfig.from_dict(json.loads(payload["config"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a valid W2Q checkpoint (bad configuration: {error})") from error
    if require_trained and not (payload.get("trained") is True and int(payload.get("step", 0)) > 0
                                and payload.get("validation")):
        raise ValueError(f"{path} is not a trained W2Q model (trained={payload.get('trained')!r}, "
                         f"steps={payload.get('step', 0)}); finish its training run first")
    model = W2Q(config.model)
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{path}: the weights do not fit the stored W2Q configuration: {error}") from error
    return model.eval(), config, payload


def export_weights(checkpoint: str | Path, dest: str | Path, **provenance: Any) -> Path:
    """Write a trained checkpoint without optimizer state (the shipped ``pinqi/weights/w2q.pt``),
    readable by everyone; ``provenance`` (numbers / strings) is stored as the JSON string ``"provenance"``."""
    payload = load_checkpoint(checkpoint, kind="w2q")
    load_w2q(checkpoint)  # refuses untrained runs
    keep = {k: v for k, v in payload.items() if k not in ("optimizer", "scheduler", "format_version")}
    if provenance:
        keep["provenance"] = json.dumps(provenance, sort_keys=True)
    save_checkpoint(dest, keep)
    Path(dest).chmod(0o644)
    return Path(dest)
