"""Configuration of W2Q: the model (:class:`W2QConfig`) and its training (:class:`W2QTrainConfig`,
the ``cpu`` / ``ship`` / ``gpu`` / ``paper`` / ``micro`` presets, :func:`load_w2q_config`).

``model_type`` chooses the model: ``"w2q"`` (protocol-embedding network + K fit/refine
iterations), ``"embedding"`` (the same network without the fit layer) or ``"unet"`` (plain U-Net,
no sequence information); :data:`MODEL_TYPES` lists the model settings each implies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.config_mixin import ConfigMixin
from .protocols import DATA_VERSIONS

__all__ = ["W2QConfig", "W2QTrainConfig", "MODEL_TYPES", "PRESETS", "load_w2q_config"]

MODEL_TYPES: dict[str, dict[str, Any]] = {"w2q": {}, "embedding": {"n_iterations": 0},
                                          "unet": {"network": "plain", "n_iterations": 0}}


@dataclass(frozen=True)
class W2QConfig(ConfigMixin):
    """Hyper-parameters of :class:`W2Q` (stored in checkpoints as JSON).

    Attributes
    ----------
    network : "embedding" | "plain"
        The protocol-conditioned :class:`~pinqi.w2q_networks.W2QNet` or the plain U-Net baseline.
    n_iterations : int
        Fit + refine iterations K (0: network only).
    features, embed_dim, group_size
        Network size (see :class:`~pinqi.w2q_networks.W2QNet`).
    lambda_init, softplus_beta
        Initial λ (all three parameters) and the β of the softplus keeping λ positive.
    fit_solver, fit_max_iter, fit_tol
        :func:`solvers.nonlinear_fit` settings.
    scale_bound, percentile, wm_fraction
        ±bound of the scale around its reference, the normalising percentile, the share of brain
        pixels taken as white-matter-like (see :mod:`pinqi.w2q_scale`).
    protocol_version
        Protocol features (:func:`pinqi.w2q.signal.protocol_features`): 1 without MP-RAGE (the
        weights trained before it; the default, so that their stored configuration reads as
        before), 2 with MP-RAGE and the literature tissue centres.
    field_degree
        0: one global scale per contrast (as the issue specifies). > 0: additionally a smooth
        relative receive field per contrast, a polynomial of this degree fitted in closed form
        (:func:`pinqi.w2q_scale.fit_smooth_field`) — for images with bias fields.
    """

    network: str = "embedding"
    n_iterations: int = 2
    features: tuple[int, ...] = (16, 32, 64)
    embed_dim: int = 32
    group_size: int = 8
    lambda_init: float = 0.1
    softplus_beta: float = 5.0
    fit_solver: str = "gauss-newton"
    fit_max_iter: int = 10
    fit_tol: float = 1e-5
    scale_bound: float = 0.2
    percentile: float = 0.95
    wm_fraction: float = 0.25
    field_degree: int = 0
    protocol_version: int = 1

    def __post_init__(self) -> None:
        if self.protocol_version not in (1, 2):
            raise ValueError(f"protocol_version must be 1 or 2; got {self.protocol_version}")
        if self.network not in ("embedding", "plain"):
            raise ValueError(f"network must be 'embedding' or 'plain'; got {self.network!r}")
        if self.n_iterations < 0 or (self.network == "plain" and self.n_iterations):
            raise ValueError(f"n_iterations must be >= 0 (0 for the plain network); got {self.n_iterations}")
        if self.lambda_init <= 0 or not 0 <= self.scale_bound < 1:
            raise ValueError(f"need lambda_init > 0 and scale_bound in [0, 1); got {self.lambda_init}, {self.scale_bound}")


@dataclass(frozen=True)
class W2QTrainConfig(ConfigMixin):
    """Everything a W2Q training run depends on (stored in its checkpoints as JSON).

    ``model_type`` "w2q" | "embedding" | "unet"; ``mode`` "supervised" | "self-supervised";
    ``pretrain_steps`` network-only steps, then ``steps`` full-model steps (lr ``lr`` then
    ``lr_full``, λ at ``lr_lambdas``; warm-ups ``warmup_steps`` / ``full_warmup_steps``);
    ``loss_weights`` (PD, T1, T2) of the supervised L1; ``tv_weight``, ``pd_floor_weight``,
    ``pd_floor`` of the self-supervised loss; ``held_out`` the protocol band kept for validation;
    ``threads`` for ``torch.set_num_threads`` (0: leave it); ``init_from`` a checkpoint whose
    matching weights initialise a fresh run (with its learned λ unless ``init_lambdas`` is False,
    which restarts them at ``model.lambda_init``); ``data_version`` the simulated data
    (:func:`pinqi.w2q.protocols.data_settings`: 1 legacy ranges, map-mixed partial volumes and the
    wide tissue ranges; 2 clinical ranges with MP-RAGE, physical partial volumes, literature prior;
    3 as 2 with water-weighted relaxation-rate targets for mixed voxels).
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
    init_lambdas: bool = True
    seed: int = 0
    data_version: int = 1

    def __post_init__(self) -> None:
        if self.data_version not in DATA_VERSIONS or (self.data_version >= 2 and self.model.network != "plain"
                                                      and self.model.protocol_version < 2):
            raise ValueError(f"data_version must be one of {DATA_VERSIONS}, and data with MP-RAGE (2, 3) needs "
                             f"protocol_version 2; "
                             f"got data_version {self.data_version}, protocol_version {self.model.protocol_version}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {sorted(MODEL_TYPES)}; got {self.model_type!r}")
        if self.mode not in ("supervised", "self-supervised"):
            raise ValueError(f"mode must be 'supervised' or 'self-supervised'; got {self.mode!r}")
        if not 0 <= self.held_out[0] < self.held_out[1] <= 1:
            raise ValueError(f"held_out must be a band (low, high) within [0, 1]; got {self.held_out}")

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.steps


def cpu_preset() -> W2QTrainConfig:
    """64x64 slices, batch 8, 5000 network-only + 2500 full steps (K = 2, 6 Gauss-Newton iterations
    per fit), clinical protocols with MP-RAGE, physical partial volumes, literature prior: about
    0.4 s per network step and 1.1 s per full step, 80 minutes on one free CPU core."""
    return W2QTrainConfig(model=W2QConfig(fit_max_iter=6, protocol_version=2), pretrain_steps=5000, steps=2500,
                          warmup_steps=100, full_warmup_steps=50, checkpoint_every=250, data_version=3)


def ship_preset() -> W2QTrainConfig:
    """The shipped weights' run on a shared CPU core: the ``cpu`` model and data (version 3), initialised
    from the shipped ``pinqi/weights/w2q.pt`` (every tensor whose shape matches), 2000 network + 600
    full steps, checkpoints every 50 steps (resumable)."""
    return cpu_preset().replace(pretrain_steps=2000, steps=600, warmup_steps=50, full_warmup_steps=25,
                                checkpoint_every=50, init_from="pinqi/weights/w2q.pt", lr=1e-3)


def gpu_preset() -> W2QTrainConfig:
    """One GPU for about 8 minutes: the ``cpu`` model and data, batch 32, 3000 network + 1000 full steps
    (all threads)."""
    return cpu_preset().replace(batch_size=32, pretrain_steps=3000, steps=1000, checkpoint_every=250, threads=0,
                                val_samples=64)


def paper_preset() -> W2QTrainConfig:
    """A larger configuration for a GPU: 192x192, batch 16, wider networks, 3 iterations."""
    model = W2QConfig(n_iterations=3, features=(32, 64, 128, 256), embed_dim=64, group_size=16, fit_max_iter=10,
                      protocol_version=2)
    return W2QTrainConfig(model=model, image_size=192, batch_size=16, steps=10000, pretrain_steps=2000,
                          warmup_steps=200, val_samples=64, checkpoint_every=250, threads=0, data_version=3)


def micro_preset() -> W2QTrainConfig:
    """Seconds-long runs for tests: 16x16 phantom, tiny networks."""
    model = W2QConfig(n_iterations=1, features=(8, 16), embed_dim=8, group_size=4, fit_max_iter=3, protocol_version=2)
    return W2QTrainConfig(model=model, anatomy="phantom", image_size=16, batch_size=2, steps=2, pretrain_steps=1,
                          warmup_steps=1, val_samples=2, checkpoint_every=2, data_version=3)


PRESETS = {"cpu": cpu_preset, "ship": ship_preset, "gpu": gpu_preset, "paper": paper_preset, "micro": micro_preset}


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


