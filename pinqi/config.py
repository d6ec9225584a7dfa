"""Configuration of the PINQI model, including the switches for the paper's ablations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

FitMode = Literal["implicit", "unrolled", "gradient-descent", "none"]


@dataclass(frozen=True)
class PINQIConfig:
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
        Pixel-wise solver of the nonlinear subproblem ("lbfgs" or "gauss-newton"), its iteration
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

    def __post_init__(self) -> None:
        if self.n_iterations < 1:
            raise ValueError(f"n_iterations must be >= 1; got {self.n_iterations}")
        if self.fit_mode not in ("implicit", "unrolled", "gradient-descent", "none"):
            raise ValueError(
                "fit_mode must be one of 'implicit', 'unrolled', 'gradient-descent', 'none'; "
                f"got {self.fit_mode!r}"
            )
        if self.fit_solver not in ("lbfgs", "gauss-newton"):
            raise ValueError(f"fit_solver must be 'lbfgs' or 'gauss-newton'; got {self.fit_solver!r}")
        for name in ("lambda_p", "lambda_y", "lambda_q_start", "softplus_beta", "cg_tol", "fit_tol"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if not self.use_image_regulariser and not self.use_signal_model:
            raise ValueError(
                "at least one of use_signal_model and use_image_regulariser must be True: "
                "otherwise the data-consistency step has no regulariser"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PINQIConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown PINQIConfig keys {unknown}; expected a subset of {sorted(known)}")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**converted)

    def replace(self, **changes: Any) -> PINQIConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


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
