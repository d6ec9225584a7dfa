"""Configuration of PINQI: the model (:class:`PINQIConfig`, the paper's ablations :data:`ABLATIONS`)
and its training (:class:`TrainConfig` and the ``cpu`` / ``ship`` / ``gpu`` / ``paper`` / ``micro`` presets)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .common.config_mixin import ConfigMixin

FitMode = Literal["implicit", "unrolled", "gradient-descent", "none"]


@dataclass(frozen=True)
class PINQIConfig(ConfigMixin):
    """Hyper-parameters of :class:`pinqi.PINQI`.

    Attributes
    ----------
    n_iterations
        T, the number of alternations between data consistency and the nonlinear fit (paper: 5).
    image_features, parameter_features
        U-Net widths of Y_θ and P_θ per level, the last being the bottleneck. The paper lists
        (16, 32, 48, 64) and (32, 64, 96, 128); its parameter counts (597,323 and 2,235,308) come
        out with a bottleneck level that repeats the last width, hence the defaults.
    lambda_p, lambda_y
        Initial regularisation strengths of the parameter and image regularisers, every iteration.
    lambda_q_start, lambda_q_step
        λ_q of iteration i (1-based) starts at ``lambda_q_start + lambda_q_step * i``.
    softplus_beta
        λ = softplus_β(λ̃) keeps every strength positive (paper: β = 5).
    cg_tol, cg_max_iter
        Data-consistency CG: relative residual tolerance and iteration cap (forward and backward).
    init_cg_iterations
        y₀ = a few CG iterations on AᴴA y = Aᴴk started from zero (0: y₀ = Aᴴk).
    fit_solver, fit_max_iter, fit_tol
        Pixel-wise solver of the nonlinear subproblem ("auto", "varpro", "lbfgs" or "gauss-newton";
        see :func:`solvers.nonlinear_fit`), its iteration
        cap, and its gradient tolerance; ``fit_tol=None`` takes :func:`solvers.nonlinear_fit`'s
        precision-aware default (about 1.2e-5 in float32): a tighter tolerance than float32 can
        resolve keeps the few pixels that never meet it iterating to the cap (at 192², 1e-6 left
        6 % of the pixels running all 50 iterations and made the fit 12x slower).
    use_signal_model
        Ablation (a) when False: no λ_q q(p) term and no fit; p = P_θ(y) every iteration.
    use_image_regulariser
        Ablation (b) when False: no Y_θ, λ_y = 0.
    use_parameter_regulariser
        Ablation (c) when False: no P_θ inside the loop, λ_p = 0 (plain regression, p₀ still
        comes from P_θ(y₀) so the solver has a starting point).
    fit_mode
        "implicit" (the paper), "unrolled" (autograd through the solver), "gradient-descent"
        (ablation (e): ``gd_steps`` learned-step gradient steps) or "none" (ablation (d): p = P_θ(y)).
    shared_regularisers
        Ablation (f): Y_θ and P_θ evaluated once on y₀ and the results kept for all iterations.
    prior_weight
        ``"constant"`` (the paper): the λ as learned. ``"unsampled"``: λ_q, λ_y and λ_p multiplied
        per sample by the share of Cartesian k-space that was *not* sampled, so the priors fade as
        the data improve and fully sampled data get exactly the pixel-wise fit (a trained prior
        otherwise pulls T1s outside its training range towards it).
    checkpoint_networks
        Recompute U-Net activations in the backward pass. On by default: at 192², batch 8 the
        U-Net activations alone would take about 24 GB; with it the training step fits in 12 GB.
    """

    n_iterations: int = 5
    image_features: tuple[int, ...] = (16, 32, 48, 64, 64)
    parameter_features: tuple[int, ...] = (32, 64, 96, 128, 128)
    lambda_p: float = 3.0
    lambda_y: float = 0.1
    lambda_q_start: float = 0.1
    lambda_q_step: float = 0.05
    softplus_beta: float = 5.0
    cg_tol: float = 1e-6
    cg_max_iter: int = 100
    init_cg_iterations: int = 3
    fit_solver: str = "lbfgs"
    fit_max_iter: int = 50
    fit_tol: float | None = None
    use_signal_model: bool = True
    use_image_regulariser: bool = True
    use_parameter_regulariser: bool = True
    fit_mode: FitMode = "implicit"
    gd_steps: int = 5
    shared_regularisers: bool = False
    checkpoint_networks: bool = True
    prior_weight: str = "constant"

    def __post_init__(self) -> None:
        if self.n_iterations < 1:
            raise ValueError(f"n_iterations must be >= 1; got {self.n_iterations}")
        if self.fit_mode not in ("implicit", "unrolled", "gradient-descent", "none"):
            raise ValueError(
                "fit_mode must be one of 'implicit', 'unrolled', 'gradient-descent', 'none'; "
                f"got {self.fit_mode!r}"
            )
        if self.prior_weight not in ("constant", "unsampled"):
            raise ValueError(f"prior_weight must be 'constant' or 'unsampled'; got {self.prior_weight!r}")
        if self.fit_solver not in ("auto", "varpro", "lbfgs", "gauss-newton"):
            raise ValueError(
                f"fit_solver must be 'auto', 'varpro', 'lbfgs' or 'gauss-newton'; got {self.fit_solver!r}"
            )
        for name in ("lambda_p", "lambda_y", "lambda_q_start", "softplus_beta", "cg_tol", "fit_tol"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if not self.use_image_regulariser and not self.use_signal_model:
            raise ValueError(
                "at least one of use_signal_model and use_image_regulariser must be True: "
                "otherwise the data-consistency step has no regulariser"
            )


ABLATIONS: dict[str, dict[str, Any]] = {
    "a": {"use_signal_model": False},
    "b": {"use_image_regulariser": False},
    "c": {"use_parameter_regulariser": False},
    "d": {"fit_mode": "none"},
    "e": {"fit_mode": "gradient-descent"},
    "f": {"shared_regularisers": True},
    "g1": {"n_iterations": 1},
    "g2": {"n_iterations": 2},
}
"""The paper's ablations as changes to the default configuration (keys as in its Fig. 6)."""


@dataclass(frozen=True)
class TrainConfig(ConfigMixin):
    """Everything a training run depends on; stored in every checkpoint.

    Attributes
    ----------
    model
        The PINQI configuration.
    anatomy
        Anatomy source for the synthetic data ("mni152", "brainweb" or "phantom").
    image_size, n_coils, times, acceleration
        Simulation: square image size, receive coils, saturation times (s), and the acceleration
        range ``(low, high)`` drawn per sample.
    batch_size, steps
        Optimiser steps and samples per step (per process under DDP the batch is split).
    lr_networks, lr_lambdas, weight_decay, warmup_steps, grad_clip
        AdamW with linear warm-up then cosine decay to zero; gradient-norm clipping.
    outside_weight
        Weight of pixels outside the brain mask in the loss.
    deep_supervision
        Weight of the loss of every earlier iteration.
    pretrain_steps
        Steps of P_θ pretraining on images interpolated between zero-filled and ground truth.
    checkpoint_every
        Write a checkpoint every N steps (and at the end).
    seed
        Seeds the data stream and the network initialisation.
    wide_t1, inserts, estimated_csm, intensity_scale, global_phase
        Training data off the brain distribution (see :class:`simulation.T1MappingDataset`):
        shares of samples with wide T1 ranges, with elliptical inserts, and with coil maps
        estimated from their own centre lines; a log-uniform global intensity factor; a uniform
        global M0 phase. The paper preset leaves them off.
    validation_every, validation_samples, validation_acceleration
        Every ``validation_every`` steps (0: never) the T1 nRMSE inside the brain is measured on
        ``validation_samples`` samples of the validation split at ``validation_acceleration``
        (coil maps estimated whenever ``estimated_csm > 0``); it is logged, and the weights of
        the best value so far are written to ``best.pt`` in the output folder.
    calibration_lines, csm_method
        Fully sampled centre lines (ACS) added to the longest-delay acquisition, and the estimator
        of the ``estimated_csm`` maps (:class:`simulation.T1MappingDataset`).
    """

    model: PINQIConfig = field(default_factory=PINQIConfig)
    anatomy: str = "mni152"
    image_size: int = 192
    n_coils: int = 8
    times: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 8.0)
    acceleration: tuple[float, float] = (4.0, 8.0)
    batch_size: int = 8
    steps: int = 1000
    lr_networks: float = 4e-3
    lr_lambdas: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    outside_weight: float = 0.1
    deep_supervision: float = 0.05
    pretrain_steps: int = 0
    checkpoint_every: int = 100
    seed: int = 0
    wide_t1: float = 0.0
    inserts: float = 0.0
    estimated_csm: float = 0.0
    intensity_scale: tuple[float, float] = (1.0, 1.0)
    global_phase: bool = False
    validation_every: int = 0
    validation_samples: int = 16
    validation_acceleration: float = 8.0
    calibration_lines: int = 0
    csm_method: str = "walsh"

    def __post_init__(self) -> None:
        for name in ("image_size", "n_coils", "batch_size", "checkpoint_every", "validation_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1; got {value!r}")
        for name in ("steps", "pretrain_steps", "warmup_steps", "validation_every", "calibration_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0; got {value!r}")
        for name in ("wide_t1", "inserts", "estimated_csm", "outside_weight"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1]; got {getattr(self, name)!r}")
        if self.csm_method not in ("walsh", "inati", "espirit"):
            raise ValueError(f"TrainConfig.csm_method must be 'walsh', 'inati' or 'espirit'; got {self.csm_method!r}")


def cpu_preset() -> TrainConfig:
    """Trains PINQI in about 20 minutes on 2 CPU cores.

    64x64 images (the brain still shows grey/white-matter structure at 3 mm), 4 coils instead of
    8 (the coil count scales every FFT and barely changes the problem at 64x64), batch 4, and
    three-level U-Nets (Y_θ (8, 16, 32), P_θ (16, 32, 64)) without activation checkpointing:
    the networks dominate the step time on a CPU, and memory is no concern at this size. CG is
    capped at 30 iterations and the fit at 20 L-BFGS iterations. A step then takes about 2.5 s
    on one core, so 50 P_θ pretraining steps plus 400 PINQI steps fit in about 20 minutes.

    Two departures from the paper's λ, both because P_θ is far from trained after 400 steps:

    - λ_p starts at 0.3 instead of 3. In image-RMS units the data term's curvature with respect to
      R1 is about 0.4 (five saturation times, M0 ~ 1), so λ_p = 3 makes the fit return mostly
      P_θ's guess; 0.3 lets the data decide where P_θ is still poor. Trained this way λ_p settles
      near 0.05, the training loss halves, and the 8x test T1 nRMSE is 0.134 instead of 0.174.
    - The λ learn at 1e-2 instead of 1e-3, which barely moves them in 400 steps (8x nRMSE 0.174
      instead of 0.183 with λ_p starting at 3).

    Same data, steps and seed in each comparison; see benchmarks/results/t1_mapping.md.
    """
    return TrainConfig(
        model=PINQIConfig(
            lambda_p=0.3,
            image_features=(8, 16, 32),
            parameter_features=(16, 32, 64),
            checkpoint_networks=False,
            cg_max_iter=30,
            cg_tol=1e-5,
            fit_max_iter=20,
            fit_tol=1e-5,
        ),
        image_size=64,
        n_coils=4,
        batch_size=4,
        steps=400,
        lr_lambdas=1e-2,
        warmup_steps=30,
        checkpoint_every=100,
        pretrain_steps=50,
    )


def paper_preset() -> TrainConfig:
    """The paper's configuration for a GPU: 192x192, 8 coils, batch 16, 80 epochs of 1000 samples."""
    return TrainConfig(
        image_size=192,
        n_coils=8,
        batch_size=16,
        steps=80 * (1000 // 16),
        warmup_steps=200,
        pretrain_steps=1000 // 16,
        checkpoint_every=250,
    )


def micro_preset() -> TrainConfig:
    """Seconds-long runs for tests: 16x16 phantom, 2 coils, 2 iterations."""
    return TrainConfig(
        model=PINQIConfig(
            n_iterations=2,
            image_features=(8, 16),
            parameter_features=(8, 16),
            cg_max_iter=20,
            fit_max_iter=10,
        ),
        anatomy="phantom",
        image_size=16,
        n_coils=2,
        batch_size=2,
        steps=4,
        warmup_steps=1,
        checkpoint_every=2,
    )


def ship_preset() -> TrainConfig:
    """The shipped model (``pinqi/weights/pinqi_t1.pt``): the cpu preset's networks at 64², trained
    long, in the background, on data that leave the brain's distribution.

    Differences from :func:`cpu_preset`, each for data the model will meet on real scans:
    accelerations 1–10 (fully sampled included) on top of 16 calibration (ACS) lines in the
    longest-delay acquisition; coil maps estimated from those lines by ESPIRiT in 80 % of samples
    (the reconstruction of measured data has no true maps); class T1 drawn from 0.1–5 s in 30 % of
    samples and elliptical inserts in 50 % (phantom tubes, lesions); a global intensity factor from
    1e-3 to 1e3 and a uniform global phase. The fit is the variable-projection solver, which finds
    the global minimum for any M0 phase and scale. The learned priors are weighted by the share of
    k-space not sampled (``prior_weight="unsampled"``), so fully sampled data are fitted as they are. 20000 steps set the cosine schedule's length; training runs
    across working periods from the resumable checkpoint in ``pinqi/weights/training/``.
    """
    base = cpu_preset()
    return base.replace(
        model=base.model.replace(fit_solver="varpro", prior_weight="unsampled"),
        acceleration=(1.0, 10.0),
        calibration_lines=16,
        csm_method="espirit",
        steps=20000,
        pretrain_steps=200,
        warmup_steps=100,
        checkpoint_every=50,
        wide_t1=0.3,
        inserts=0.5,
        estimated_csm=0.8,
        intensity_scale=(1e-3, 1e3),
        global_phase=True,
        validation_every=100,
        validation_samples=16,
    )


def gpu_preset() -> TrainConfig:
    """Continue the shipped model on one large GPU for about 8 minutes: 192², 8 coils, batch 8.

    Same networks and data switches as :func:`ship_preset`; start it from the shipped weights and
    bound it by wall time: ``pinqi train --preset gpu --init pinqi/weights/pinqi_t1.pt --minutes 8``
    (a resumable checkpoint is written when the time is up). Not yet run on a GPU: no session had one.
    """
    base = ship_preset()
    return base.replace(
        image_size=192, n_coils=8, batch_size=8, steps=600, pretrain_steps=0, warmup_steps=20, calibration_lines=24,
        checkpoint_every=100, validation_every=100, validation_samples=8,
    )


PRESETS = {"cpu": cpu_preset, "paper": paper_preset, "micro": micro_preset, "ship": ship_preset, "gpu": gpu_preset}


def load_train_config(preset: str, config_file: str | Path | None = None) -> TrainConfig:
    """A preset, optionally updated by a JSON file of overrides (``{"steps": 100, "model": {...}}``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    config = PRESETS[preset]()
    if config_file is None:
        return config
    overrides = json.loads(Path(config_file).read_text())
    values = config.to_dict()
    model_overrides = overrides.pop("model", {})
    values.update(overrides)
    values["model"].update(model_overrides)
    return TrainConfig.from_dict(values)
