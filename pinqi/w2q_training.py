"""Training of W2Q and of its two baselines: presets, held-out protocols, losses, trainer.

``pinqi train --task w2q --mode supervised|self-supervised [--preset cpu|paper|micro]`` calls
:func:`train_w2q`. The model is chosen by ``model_type`` (a ``--config`` JSON key):
``"w2q"`` (protocol-embedding network + K fit/refine iterations), ``"embedding"`` (the same
network without the fit layer) or ``"unet"`` (plain U-Net, no sequence information).

Data
    :class:`BandedProtocolDataset`, a :class:`simulation.WeightedImageDataset` whose protocols
    are drawn from the (deliberately wider than clinical) :class:`~simulation.weighted_dataset.
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
    supervised: ``Σ_i w_i · mean_brain |p̂_i − p_i|`` with ``w = (PD 0.15, T1 0.1, T2 0.5)`` (T1, T2
    in seconds) on the final maps, plus ``deep_supervision`` × the same on every earlier
    estimate. self-supervised: L1 between the re-synthesised and the input (normalised) images
    of all three contrasts in the brain + ``tv_weight`` × total variation of (PD, ln T1, ln T2) +
    ``pd_floor_weight`` × ``mean_brain relu(pd_floor − PD)``.
Schedule
    ``pretrain_steps`` steps train the network alone (its loss on ``p_reg⁰``; cheap; λ unused),
    then ``steps`` steps the whole model end to end; AdamW, each phase with its own linear warm-up
    and cosine decay (:func:`phase_factor`). ``init_from`` starts from another run's weights
    (every tensor whose name and shape match), e.g. to train the full model from a network run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .training import learning_rate_factor
from .w2q import W2Q, W2QConfig, W2QOutput
from .w2q_data import BandedProtocolDataset, build_dataset, contrast_availability

__all__ = ["W2QTrainConfig", "PRESETS", "load_w2q_config", "BandedProtocolDataset", "build_w2q", "W2QTrainer",
           "train_w2q", "load_w2q", "export_weights", "map_metrics", "supervised_loss", "self_supervised_loss",
           "contrast_availability", "evaluate"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"
MODEL_TYPES = {"w2q": {}, "embedding": {"n_iterations": 0}, "unet": {"network": "plain", "n_iterations": 0}}
PARAMETERS = ("pd", "t1", "t2")


@dataclass(frozen=True)
class W2QTrainConfig:
    """Everything a W2Q training run depends on (stored in its checkpoints as JSON).

    ``model_type`` "w2q" | "embedding" | "unet"; ``mode`` "supervised" | "self-supervised";
    ``pretrain_steps`` network-only steps, then ``steps`` full-model steps (lr ``lr`` then
    ``lr_full``, λ at ``lr_lambdas``; warm-ups ``warmup_steps`` / ``full_warmup_steps``);
    ``loss_weights`` (PD, T1, T2) of the supervised L1; ``tv_weight``, ``pd_floor_weight``,
    ``pd_floor`` of the self-supervised loss; ``held_out`` the protocol band kept for validation;
    ``threads`` for ``torch.set_num_threads`` (0: leave it); ``init_from`` a checkpoint whose
    matching weights initialise a fresh run.
    """

    model: W2QConfig = field(default_factory=W2QConfig)
    model_type: str = "w2q"
    mode: str = "supervised"
    anatomy: str = "mni152"
    image_size: int = 64
    batch_size: int = 8
    steps: int = 120
    pretrain_steps: int = 350
    lr: float = 2e-3
    lr_full: float = 1e-3
    lr_lambdas: float = 2e-2
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    full_warmup_steps: int = 10
    grad_clip: float = 1.0
    loss_weights: tuple[float, float, float] = (0.15, 0.1, 0.5)
    deep_supervision: float = 0.1
    contrast_dropout: float = 0.5
    tv_weight: float = 0.01
    pd_floor_weight: float = 0.1
    pd_floor: float = 0.6
    held_out: tuple[float, float] = (0.4, 0.6)
    val_samples: int = 16
    checkpoint_every: int = 50
    threads: int = 1
    init_from: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {sorted(MODEL_TYPES)}; got {self.model_type!r}")
        if self.mode not in ("supervised", "self-supervised"):
            raise ValueError(f"mode must be 'supervised' or 'self-supervised'; got {self.mode!r}")
        if not 0 <= self.held_out[0] < self.held_out[1] <= 1:
            raise ValueError(f"held_out must be a band (low, high) within [0, 1]; got {self.held_out}")

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.steps

    def to_dict(self) -> dict[str, Any]:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        values["model"] = self.model.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> W2QTrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if set(values) - known:
            raise ValueError(f"unknown W2QTrainConfig keys {sorted(set(values) - known)}; expected a subset of {sorted(known)}")
        conv = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if isinstance(conv.get("model"), dict):
            conv["model"] = W2QConfig.from_dict(conv["model"])
        return cls(**conv)

    def replace(self, **changes: Any) -> W2QTrainConfig:
        return dataclasses.replace(self, **changes)


def cpu_preset() -> W2QTrainConfig:
    """64x64 slices, batch 8, 5000 network-only + 2500 full steps (K = 2, 6 Gauss-Newton iterations
    per fit): about 0.4 s per network step and 1.1 s per full step, 80 minutes on one free CPU core.
    The network-only baselines train for the same 7500 steps (50 and 30 minutes)."""
    return W2QTrainConfig(model=W2QConfig(fit_max_iter=6), pretrain_steps=5000, steps=2500, warmup_steps=100,
                          full_warmup_steps=50, checkpoint_every=250)


def paper_preset() -> W2QTrainConfig:
    """A larger configuration for a GPU: 192x192, batch 16, wider networks, 3 iterations."""
    model = W2QConfig(n_iterations=3, features=(32, 64, 128, 256), embed_dim=64, group_size=16, fit_max_iter=10)
    return W2QTrainConfig(model=model, image_size=192, batch_size=16, steps=10000, pretrain_steps=2000,
                          warmup_steps=200, val_samples=64, checkpoint_every=250, threads=0)


def micro_preset() -> W2QTrainConfig:
    """Seconds-long runs for tests: 16x16 phantom, tiny networks."""
    model = W2QConfig(n_iterations=1, features=(8, 16), embed_dim=8, group_size=4, fit_max_iter=3)
    return W2QTrainConfig(model=model, anatomy="phantom", image_size=16, batch_size=2, steps=2, pretrain_steps=1,
                          warmup_steps=1, val_samples=2, checkpoint_every=2)


PRESETS = {"cpu": cpu_preset, "paper": paper_preset, "micro": micro_preset}


def load_w2q_config(preset: str, config_file: str | Path | None = None, **changes: Any) -> W2QTrainConfig:
    """A preset, updated by a JSON file of overrides (``{"steps": 100, "model": {...}}``) and ``changes``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown W2Q preset {preset!r}; expected one of {sorted(PRESETS)}")
    values = PRESETS[preset]().to_dict()
    overrides = json.loads(Path(config_file).read_text()) if config_file is not None else {}
    overrides.update({k: v for k, v in changes.items() if v is not None})
    model_type = overrides.get("model_type", values["model_type"])
    values["model"].update(MODEL_TYPES.get(model_type, {}))
    values["model"].update(overrides.pop("model", {}))
    values.update(overrides)
    config = W2QTrainConfig.from_dict(values)
    if config.model.n_iterations == 0 and config.steps:  # network-only models: every step is a network step
        config = config.replace(pretrain_steps=config.total_steps, steps=0)
    return config


def phase_factor(step: int, config: W2QTrainConfig, network: bool) -> float:
    """Learning-rate factor: warm-up + cosine over the network phase, then a fresh warm-up + cosine
    over the full phase (networks at ``lr_full``, λ at ``lr_lambdas``)."""
    if step < config.pretrain_steps:
        return learning_rate_factor(step, config.warmup_steps, config.pretrain_steps)
    factor = learning_rate_factor(step - config.pretrain_steps, config.full_warmup_steps, config.steps)
    return factor * (config.lr_full / config.lr if network else 1.0)


def build_w2q(config: W2QTrainConfig) -> W2Q:
    """A freshly initialised model (seeded by ``config.seed``, global RNG state restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return W2Q(config.model)


def _brain_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``x`` (B, Y, X) over the mask (B, Y, X), averaged over the batch."""
    m = mask.to(x.dtype)
    return ((x * m).sum((-2, -1)) / m.sum((-2, -1)).clamp_min(1)).mean()


def map_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """``Σ_i w_i mean_brain |pred_i − target_i|`` for (PD, T1, T2) maps ``(B, 3, Y, X)``."""
    return sum(w * _brain_mean((pred[:, i] - target[:, i]).abs(), mask) for i, w in enumerate(weights))  # type: ignore[return-value]


def supervised_loss(output: W2QOutput, target: torch.Tensor, mask: torch.Tensor, config: W2QTrainConfig) -> torch.Tensor:
    """Weighted L1 on the final maps plus deep supervision of the earlier estimates (module docstring)."""
    loss = map_l1(output.final, target, mask, config.loss_weights)
    for earlier in output.intermediate:
        loss = loss + config.deep_supervision * map_l1(earlier, target, mask, config.loss_weights)
    return loss


def total_variation(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of (PD, ln T1, ln T2), mean over brain pixel pairs."""
    u = torch.cat([maps[:, :1], maps[:, 1:].log()], 1)
    m = mask.to(u.dtype)
    dy, my = (u[..., 1:, :] - u[..., :-1, :]).abs().sum(1), m[..., 1:, :] * m[..., :-1, :]
    dx, mx = (u[..., :, 1:] - u[..., :, :-1]).abs().sum(1), m[..., :, 1:] * m[..., :, :-1]
    return ((dy * my).sum() + (dx * mx).sum()) / (my.sum() + mx.sum()).clamp_min(1)


def self_supervised_loss(model: W2Q, output: W2QOutput, config: W2QTrainConfig) -> torch.Tensor:
    """Re-synthesis L1 over all contrasts + TV + soft PD lower bound (module docstring)."""
    mask = output.brain_mask
    synthesised, _ = model.synthesise(output)
    loss = _brain_mean((synthesised - output.normalised).abs().mean(1), mask)
    loss = loss + config.tv_weight * total_variation(output.final, mask)
    return loss + config.pd_floor_weight * _brain_mean(torch.relu(config.pd_floor - output.final[:, 0]), mask)


def map_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per parameter (pd, t1, t2), averaged over samples, in the brain: MAE, MPE (signed mean
    percentage error), MAPE (mean absolute percentage error), PSNR [dB] (peak = max target)."""
    out: dict[str, dict[str, float]] = {}
    m = mask.bool()
    for i, name in enumerate(PARAMETERS):
        rows = []
        for b in range(pred.shape[0]):
            p, t = pred[b, i][m[b]].double(), target[b, i][m[b]].double()
            if t.numel() == 0:
                continue
            rel = (p - t) / t.clamp_min(1e-6)
            rmse = (p - t).square().mean().sqrt().clamp_min(1e-12)
            rows.append([(p - t).abs().mean(), 100 * rel.mean(), 100 * rel.abs().mean(), 20 * torch.log10(t.max() / rmse)])
        v = torch.tensor(rows).mean(0).tolist() if rows else [math.nan] * 4
        out[name] = dict(zip(("mae", "mpe", "mape", "psnr"), v))
    return out


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
    return map_metrics(torch.cat(preds), torch.cat(targets), torch.cat(masks))


class W2QTrainer:
    """Runs or resumes one W2Q training run into ``out_dir`` (``checkpoint.pt``, ``train_log.jsonl``)."""

    def __init__(self, config: W2QTrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.config, self.out_dir, self.progress = config, Path(out_dir), progress
        self.model = build_w2q(config)
        self.optimizer = torch.optim.AdamW(
            [{"params": self.model.network_parameters(), "lr": config.lr},
             {"params": self.model.lambda_parameters(), "lr": config.lr_lambdas, "weight_decay": 0.0}],
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [lambda s: phase_factor(s, config, True), lambda s: phase_factor(s, config, False)])
        self.dataset = build_dataset(config, "train", config.batch_size * config.total_steps)
        self.step, self.skipped, self.validation, self.seconds = 0, 0, None, 0.0
        if resume and (self.out_dir / CHECKPOINT_NAME).is_file():
            self._restore(self.out_dir / CHECKPOINT_NAME)
        elif config.init_from:
            self._initialise_from(Path(config.init_from))

    def _initialise_from(self, path: Path) -> None:
        """Copy every weight of ``path``'s model whose name and shape match (e.g. a pretrained network)."""
        source = load_checkpoint(path, kind="w2q")["model"]
        own = self.model.state_dict()
        matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        if not matched:
            raise ValueError(f"{path}: no weight matches this model; cannot initialise from it")
        self.model.load_state_dict(matched, strict=False)

    def state(self) -> dict[str, Any]:
        trained = self.step >= self.config.total_steps and self.validation is not None
        return {
            "kind": "w2q", "model_type": self.config.model_type, "config": json.dumps(self.config.to_dict(), sort_keys=True),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "step": self.step, "skipped": self.skipped,
            "trained": trained, "seconds": self.seconds,
            "validation": json.dumps(self.validation) if self.validation is not None else "",
        }

    def _restore(self, path: Path) -> None:
        payload = load_checkpoint(path, kind="w2q")
        stored = W2QTrainConfig.from_dict(json.loads(payload["config"]))
        if stored != self.config:
            raise ValueError(f"{path} was written with a different configuration; resume with the same preset/config "
                             f"or use a new output folder (stored: {stored}, requested: {self.config})")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step, self.skipped = int(payload["step"]), int(payload["skipped"])
        self.seconds = float(payload.get("seconds", 0.0))
        self.validation = json.loads(payload["validation"]) if payload.get("validation") else None
        log = self.out_dir / LOG_NAME
        if log.is_file():
            kept = [ln for ln in log.read_text().splitlines() if ln and json.loads(ln).get("step", -1) < self.step]
            log.write_text("".join(ln + "\n" for ln in kept))

    def batch(self, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The samples and the contrast availability of ``step`` (pure functions of seed and step)."""
        b = self.config.batch_size
        batch = default_collate([self.dataset[step * b + j] for j in range(b)])
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        return batch, contrast_availability(b, 3, self.config.contrast_dropout, g)

    def loss(self, step: int, batch: dict[str, torch.Tensor], available: torch.Tensor) -> torch.Tensor:
        iterations = 0 if step < self.config.pretrain_steps else None
        out = self.model(batch["images"], batch["sequence_params"], batch["sequence_types"], batch["brain_mask"],
                         available, n_iterations=iterations)
        if self.config.mode == "supervised":
            return supervised_loss(out, batch["params"], batch["brain_mask"], self.config)
        return self_supervised_loss(self.model, out, self.config)

    def train_step(self, step: int) -> dict[str, Any]:
        started = time.perf_counter()
        self.model.train()
        batch, available = self.batch(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(step, batch, available)
        grad_norm = math.nan
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))
            finite = math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
        else:
            self.skipped += 1
        self.scheduler.step()
        return {"step": step, "phase": "network" if step < self.config.pretrain_steps else "full",
                "loss": float(loss.detach()), "grad_norm": grad_norm, "lr": self.scheduler.get_last_lr()[0],
                "lambda": self.model.lambdas().detach().tolist(), "skipped": self.skipped,
                "seconds": time.perf_counter() - started}

    def validate(self) -> dict[str, Any]:
        data = build_dataset(self.config, "val", self.config.val_samples, seed=self.config.seed + 1)
        return evaluate(self.model, [data[i] for i in range(len(data))], self.config.batch_size)

    def run(self, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Train to the end (or ``stop_after`` more steps), then validate; returns this call's log records."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        total = self.config.total_steps
        end = total if stop_after is None else min(total, self.step + stop_after)
        records = []
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, desc=f"train {self.config.model_type}")
        while self.step < end:
            record = self.train_step(self.step)
            self.step += 1
            self.seconds += record["seconds"]
            records.append(record)
            with open(self.out_dir / LOG_NAME, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            if self.step % self.config.checkpoint_every == 0 and self.step < total:
                save_checkpoint(self.out_dir / CHECKPOINT_NAME, self.state())
        bar.close()
        if self.step >= total and self.validation is None:
            self.validation = self.validate()
            with open(self.out_dir / LOG_NAME, "a") as handle:
                handle.write(json.dumps({"step": self.step, "validation": self.validation}) + "\n")
        save_checkpoint(self.out_dir / CHECKPOINT_NAME, self.state())
        return records


def train_w2q(args: argparse.Namespace) -> W2QTrainer:
    """``pinqi train --task w2q``: args.preset, args.config, args.out, args.resume, args.steps,
    args.no_progress, args.mode (``--steps`` overrides the number of full-model steps)."""
    config = load_w2q_config(args.preset, args.config, mode=getattr(args, "mode", None))
    if getattr(args, "steps", None) is not None:
        config = config.replace(**({"steps": args.steps} if config.steps else {"pretrain_steps": args.steps}))
    out = args.out or Path("runs") / f"w2q-{args.preset}-{config.model_type}-{config.mode}"
    trainer = W2QTrainer(config, out, resume=bool(args.resume), progress=not getattr(args, "no_progress", False))
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
