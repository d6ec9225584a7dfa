"""The PINQI model: an unrolled half-quadratic splitting with learned regularisers.

Each of T iterations solves

1. data consistency  ``(AᴴA + (λ_q + λ_y) I) y = Aᴴk + λ_q q(p) + λ_y Y_θ(y)``  (CG, implicit backward)
2. the signal fit   ``p = argmin ||q(p) − y||² + λ_p ||p − P_θ(y)||²``        (pixel-wise L-BFGS,
   implicit backward)

with per-iteration learnable λ kept positive by a softplus. The initial image y₀ comes from a few
CG iterations on the normal equations (without gradient: it is preprocessing of the measured
data), and the initial parameters from p₀ = P_θ(y₀).

Intensity scale and phase. Scanner k-space comes in arbitrary units and with an arbitrary global
phase, but the fit's ``λ_p ||p − P_θ(y)||²`` weighs M0 (data units) against R1 (1/s).
:meth:`PINQI.forward` therefore divides the k-space by a robust complex scale ``c = s e^{iθ}`` of
the data — ``s`` the 99th percentile over pixels of ``max_t |y₀|``, ``θ`` the phase of ``Σ y₀`` —
runs the iterations on ``k / c`` and multiplies the M0 maps and the images back by ``c``. Since
``c(a k) = a c(k)`` for any complex ``a ≠ 0``, ``PINQI(a k) = (a M0, R1)`` up to float rounding.
``c`` is a constant of the graph (no gradient flows through it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from operators import LinearOperator, MultiCoilCartesianOp, MultiCoilNUFFTOp
from operators._validation import require_finite, require_nonzero
from solvers import cg, data_consistency, nonlinear_fit

from .common.bounded import inverse_softplus
from .common.model_types import Lambdas, SignalModel, _Priors
from .config import PINQIConfig
from .networks import ImageNet, ParameterNet


@dataclass
class PINQIOutput:
    """What :meth:`PINQI.forward` returns.

    Attributes
    ----------
    parameters
        ``T + 1`` tensors ``(B, P, Y, X)``: p₀ = P_θ(y₀), then the parameters after each iteration;
        ``parameters[-1]`` is the final estimate.
    images
        ``T + 1`` complex tensors ``(B, T_acq, Y, X)``: y₀, then the image after each iteration's
        data-consistency step.
    """

    parameters: list[torch.Tensor]
    images: list[torch.Tensor]
    scale: torch.Tensor | None = None
    """``(B,)`` the robust data scale ``s`` the iterations ran at (M0 and images are in data units)."""

    @property
    def final(self) -> torch.Tensor:
        """The final parameter maps ``(B, P, Y, X)``."""
        return self.parameters[-1]


SCALE_QUANTILE = 0.99
"""Quantile over pixels of ``max_t |y₀|`` that defines the data scale ``s``."""

NETWORK_SCALED_BOUND = 8.0
"""P_θ's output range for parameters in arbitrary units (M0), in units of the image RMS scale."""


class PINQI(nn.Module):
    """Physics-informed quantitative MRI reconstruction (Zimmermann et al., IEEE TCI 2024).

    Parameters
    ----------
    signal_model
        Differentiable callable ``q(p)``: ``(B, P, Y, X)`` real -> ``(B, T, Y, X)`` complex, with
        ``bounds`` (lower, upper: P floats each) and ``n_parameters``; e.g.
        ``simulation.SaturationRecovery(times)``.
    config
        Hyper-parameters and ablation switches; defaults are the paper's.
    n_times
        Number of acquisitions T (for the parameter network's input width); defaults to
        ``signal_model.n_contrasts``.
    """

    def __init__(
        self,
        signal_model: SignalModel,
        config: PINQIConfig | None = None,
        n_times: int | None = None,
    ) -> None:
        super().__init__()
        self.config = cfg = config or PINQIConfig()
        self.signal_model = signal_model
        n_params = int(signal_model.n_parameters)
        self.n_times = n_times = int(n_times if n_times is not None else signal_model.n_contrasts)
        self.n_parameters = n_params
        self.bounds = bounds = tuple(tuple(float(v) for v in b) for b in signal_model.bounds)
        # P_θ sees images divided by their RMS scale s, so parameters in arbitrary units (M0)
        # are predicted in units of s and multiplied back; physical ones (R1) stay absolute.
        scaled = tuple(i for i, unit in enumerate(signal_model.parameter_units) if unit == "a.u.")
        self._complex_amplitude = bool(getattr(signal_model, "complex_amplitude", False)) and len(scaled) == 2
        head_lower = tuple(-NETWORK_SCALED_BOUND if i in scaled else lo for i, lo in enumerate(bounds[0]))
        head_upper = tuple(NETWORK_SCALED_BOUND if i in scaled else hi for i, hi in enumerate(bounds[1]))
        initial = tuple(0.0 if i in scaled else float(v) for i, v in enumerate(signal_model.initial_value))
        self.parameter_net = ParameterNet(
            n_times=n_times,
            n_parameters=n_params,
            bounds=(head_lower, head_upper),
            initial_value=initial or None,
            scaled_parameters=scaled,
            features=cfg.parameter_features,
            max_iterations=cfg.n_iterations + 1,
            checkpoint=cfg.checkpoint_networks,
        )
        self.image_net = (
            ImageNet(
                features=cfg.image_features,
                max_iterations=cfg.n_iterations + 1,
                checkpoint=cfg.checkpoint_networks,
            )
            if cfg.use_image_regulariser
            else None
        )
        beta = cfg.softplus_beta
        iters = torch.arange(1, cfg.n_iterations + 1, dtype=torch.float64)
        self.raw_lambda_p = nn.Parameter(torch.full((cfg.n_iterations,), inverse_softplus(cfg.lambda_p, beta)))
        self.raw_lambda_y = nn.Parameter(torch.full((cfg.n_iterations,), inverse_softplus(cfg.lambda_y, beta)))
        self.raw_lambda_q = nn.Parameter(
            torch.tensor(
                [inverse_softplus(cfg.lambda_q_start + cfg.lambda_q_step * float(i), beta) for i in iters],
            )
        )
        if cfg.fit_mode == "gradient-descent":
            # ablation (e): learned step sizes per iteration and step
            self.raw_gd_steps = nn.Parameter(torch.full((cfg.n_iterations, cfg.gd_steps), inverse_softplus(0.05, beta)))
        self._choose_ablation(cfg)

    def _choose_ablation(self, cfg: PINQIConfig) -> None:
        """Pick, once, the pieces of the two equations that the configuration's ablation changes."""
        # data consistency: which priors pull y (ablation (a): no q(p); (b): no Y_θ)
        terms: list[tuple[str, Callable[..., torch.Tensor]]] = []
        if cfg.use_signal_model:
            terms.append(("q", lambda q, p, y, i, priors: q(p)))
        if cfg.use_image_regulariser:
            terms.append(("y", lambda q, p, y, i, priors: priors.image(y, i)))
        self._image_terms = tuple(terms)
        # the fit (ablation (d) and (a): p = P_θ(y); (e): gradient descent; else the solver)
        fits = cfg.use_signal_model and cfg.fit_mode != "none"
        self._solve_fit = self._take_prior if not fits else (
            self._gradient_descent if cfg.fit_mode == "gradient-descent" else self._nonlinear_fit
        )
        # ablation (c): no P_θ in the fit, λ_p = 0
        learned = cfg.use_parameter_regulariser or not fits
        self._parameter_prior = self._learned_parameter_prior if learned else self._no_parameter_prior
        # ablation (f): Y_θ and P_θ evaluated once on y₀
        self._priors = self._shared_priors if cfg.shared_regularisers else self._iteration_priors

    # -- regularisation strengths --------------------------------------------------------------
    def _softplus(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw, beta=self.config.softplus_beta)

    def lambdas(self) -> Lambdas:
        """The positive regularisation strengths ``(T,)`` of every iteration."""
        return Lambdas(
            p=self._softplus(self.raw_lambda_p),
            y=self._softplus(self.raw_lambda_y),
            q=self._softplus(self.raw_lambda_q),
        )

    def lambda_parameters(self) -> list[nn.Parameter]:
        """The raw λ parameters (the optimiser gives them their own learning rate)."""
        params = [self.raw_lambda_p, self.raw_lambda_y, self.raw_lambda_q]
        if hasattr(self, "raw_gd_steps"):
            params.append(self.raw_gd_steps)
        return params

    def network_parameters(self) -> list[nn.Parameter]:
        """Every learnable parameter that is not a λ."""
        lam_ids = {id(p) for p in self.lambda_parameters()}
        return [p for p in self.parameters() if id(p) not in lam_ids]

    # -- building blocks -----------------------------------------------------------------------
    def _check_inputs(self, kspace: torch.Tensor, csm: torch.Tensor) -> None:
        if not kspace.is_complex():
            raise TypeError(f"kspace must be complex; got dtype {kspace.dtype}")
        if not csm.is_complex():
            raise TypeError(f"csm must be complex; got dtype {csm.dtype}")
        if kspace.shape[1] != self.n_times:
            raise ValueError(
                f"kspace must have {self.n_times} acquisitions in dim 1 (shape (B, T, C, ...)); "
                f"got shape {tuple(kspace.shape)}"
            )
        expected = self.raw_lambda_p.dtype
        real = kspace.real.dtype
        if real != expected:
            raise TypeError(
                f"kspace dtype {kspace.dtype} does not match the model's {expected} parameters; "
                "call model.double() for complex128 inputs or pass complex64"
            )
        for name, value in (("kspace", kspace), ("csm", csm)):
            require_finite(name, value)
        require_nonzero("csm", csm, 3, "coil maps with no sensitivity make every image zero")

    def initial_image(self, operator: LinearOperator, kspace: torch.Tensor) -> torch.Tensor:
        """y₀: ``init_cg_iterations`` CG steps on ``AᴴA y = Aᴴk`` from zero, without gradient."""
        with torch.no_grad():
            rhs = operator.adjoint(kspace)
            if self.config.init_cg_iterations <= 0:
                return rhs
            return cg(operator.gram, rhs, tol=0.0, max_iter=self.config.init_cg_iterations).x

    def data_scale(self, y0: torch.Tensor) -> torch.Tensor:
        """The robust intensity scale ``s`` ``(B,)`` of initial images ``y0`` ``(B, T, Y, X)``.

        ``s`` = the :data:`SCALE_QUANTILE` quantile over pixels of ``max_t |y0|``, computed without
        gradient; for a signal model with a complex amplitude it is complex, ``s · e^{iθ}`` with
        ``θ`` the phase of ``Σ y0`` (the intensity-weighted mean M0 phase), so that a global phase
        of the data is removed too. Raises ValueError for a sample whose images are all zero.
        """
        with torch.no_grad():
            peak = y0.abs().amax(dim=1).flatten(1)
            scale = torch.quantile(peak.to(torch.float64), SCALE_QUANTILE, dim=1).to(peak.dtype)
            if not bool(torch.isfinite(scale).all()):
                raise ValueError("kspace must be finite; the initial image has NaN or Inf values")
            empty = ~(peak.amax(dim=1) > 0)
            if bool(empty.any()):
                raise ValueError(
                    f"kspace of sample(s) {empty.nonzero().flatten().tolist()} is all zero (or csm/mask are): "
                    "there is no signal to reconstruct"
                )
            # a sparse object can have a zero quantile: fall back to the peak
            scale = torch.where(scale > 0, scale, peak.amax(dim=1))
            if not self._complex_amplitude:
                return scale
            total = y0.sum(dim=(1, 2, 3))
            return scale * torch.polar(torch.ones_like(scale), total.angle())

    def rescale_parameters(self, p: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Parameters ``(B, P, Y, X)`` with the amplitude (M0) multiplied by ``scale`` ``(B,)``, real or complex."""
        idx = list(self.parameter_net.scaled_parameters)
        if scale.is_complex():
            m0 = torch.complex(p[:, idx[0]], p[:, idx[1]]) * scale.to(torch.complex(p, p).dtype).view(-1, 1, 1)
            p = p.clone()
            p[:, idx[0]], p[:, idx[1]] = m0.real, m0.imag
            return p
        factor = torch.ones(p.shape[:2], dtype=p.dtype, device=p.device)
        factor[:, idx] = scale.to(p.dtype).view(-1, 1)
        return p * factor[..., None, None]

    def operator(
        self,
        csm: torch.Tensor,
        mask: torch.Tensor | None = None,
        trajectory: torch.Tensor | None = None,
        density: torch.Tensor | None = None,
    ) -> LinearOperator:
        """The multi-coil forward operator: Cartesian with ``mask`` or NUFFT with ``trajectory``."""
        if trajectory is not None:
            return MultiCoilNUFFTOp(csm, trajectory, density=density)
        if mask is None:
            raise ValueError("mask is required for Cartesian k-space (or pass trajectory=...)")
        return MultiCoilCartesianOp(csm, mask)

    def pretrain_prediction(
        self, kspace: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor, images: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """P_θ pretraining: P_θ on ``alpha · y₀ + (1 − alpha) · images`` at the data scale.

        Parameters
        ----------
        kspace, csm, mask
            As in :meth:`forward`.
        images
            ``(B, T, Y, X)`` the noise-free images (the target of the blend).
        alpha
            ``(B,)`` blend weights in [0, 1].

        Returns
        -------
        The prediction ``(B, P, Y, X)`` in data units and the data scale ``s`` ``(B,)``.
        """
        self._check_inputs(kspace, csm)
        y0 = self.initial_image(self.operator(csm, mask), kspace)
        scale = self.data_scale(y0)
        a = alpha.to(y0.real.dtype).view(-1, 1, 1, 1)
        blend = (a * y0 + (1 - a) * images) / scale.view(-1, 1, 1, 1)
        return self.rescale_parameters(self.parameter_net(blend, 0), scale), scale.abs()

    # -- the pieces the ablations choose between (see _choose_ablation) ------------------------
    def prior_weight(self, mask: torch.Tensor | None, kspace: torch.Tensor) -> torch.Tensor:
        """``(B,)`` factor on every λ: 1, or the unsampled share of k-space (``config.prior_weight``)."""
        ones = torch.ones(kspace.shape[0], dtype=kspace.real.dtype, device=kspace.device)
        if self.config.prior_weight == "constant" or mask is None:
            return ones
        sampled = (mask != 0).to(ones.dtype).expand(*kspace.shape[:2], *kspace.shape[-2:]).mean(dim=(1, 2, 3))
        return ones - sampled

    def _iteration_priors(self, y0: torch.Tensor, p0: torch.Tensor) -> _Priors:
        return _Priors(image=self.image_net, parameters=self.parameter_net)

    def _shared_priors(self, y0: torch.Tensor, p0: torch.Tensor) -> _Priors:
        y_reg = self.image_net(y0, 0) if self.image_net is not None else None
        return _Priors(image=None if y_reg is None else (lambda y, i: y_reg), parameters=lambda y, i: p0)

    def _learned_parameter_prior(self, priors: _Priors, y: torch.Tensor, i: int, lam_p: torch.Tensor,
                                 p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return priors.parameters(y, i), lam_p

    def _no_parameter_prior(self, priors: _Priors, y: torch.Tensor, i: int, lam_p: torch.Tensor,
                            p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(p), torch.zeros((), dtype=p.dtype, device=p.device)

    def _take_prior(
        self, q: SignalModel, y: torch.Tensor, p_reg: torch.Tensor, lam: torch.Tensor, p: torch.Tensor, i: int
    ) -> torch.Tensor:
        """Ablations (a) and (d): no fit, p = P_θ(y)."""
        return p_reg

    def _nonlinear_fit(
        self, q: SignalModel, y: torch.Tensor, p_reg: torch.Tensor, lam: torch.Tensor, p: torch.Tensor, i: int
    ) -> torch.Tensor:
        """The paper's fit: pixel-wise solver from ``p``, implicit (or unrolled) backward."""
        cfg = self.config
        return nonlinear_fit(
            q, y, p_reg, lam, p0=p, bounds=self.bounds, solver=cfg.fit_solver, implicit=cfg.fit_mode == "implicit",
            max_iter=cfg.fit_max_iter, tol=cfg.fit_tol,
        )  # fmt: skip

    def _gradient_descent(
        self, q: SignalModel, y: torch.Tensor, p_reg: torch.Tensor, lam: torch.Tensor, p: torch.Tensor, iteration: int
    ) -> torch.Tensor:
        """Ablation (e): learned-step gradient descent on the fit objective, differentiated by autograd."""
        steps = self._softplus(self.raw_gd_steps[iteration - 1])
        lower = torch.tensor(self.bounds[0], dtype=p.dtype, device=p.device).view(1, -1, 1, 1)
        upper = torch.tensor(self.bounds[1], dtype=p.dtype, device=p.device).view(1, -1, 1, 1)
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            for step in steps:
                if not p.requires_grad:
                    p = p.detach().requires_grad_(True)
                signal = q(p)
                # ∇_p of ||q(p) − y||² as a vector-Jacobian product through q alone: autograd.grad
                # of the whole objective would also run back through y's graph, which depends on
                # p via the data-consistency layer.
                (grad,) = torch.autograd.grad(signal, p, grad_outputs=2 * (signal - y), create_graph=create_graph)
                grad = grad + 2 * lam * (p - p_reg)
                p = torch.maximum(torch.minimum(p - step * grad, upper), lower)
        return p

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self,
        kspace: torch.Tensor,
        csm: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        trajectory: torch.Tensor | None = None,
        density: torch.Tensor | None = None,
        signal_model: SignalModel | None = None,
        prior_strength: float = 1.0,
    ) -> PINQIOutput:
        """Reconstruct parameter maps from undersampled multi-coil k-space.

        Parameters
        ----------
        kspace
            Cartesian ``(B, T, C, Y, X)`` complex (zeros where not sampled), or non-Cartesian
            ``(B, T, C, K)`` when ``trajectory`` is given.
        csm
            Coil maps ``(B, C, Y, X)`` complex.
        mask
            Cartesian sampling mask ``(B, T, Y, X)`` (or broadcastable); unused for non-Cartesian.
        trajectory, density
            Non-Cartesian trajectory ``(B, T, 2, K)`` in radians/pixel and optional density
            compensation; selects :class:`operators.MultiCoilNUFFTOp`.
        signal_model
            Overrides the model's signal model for this call (e.g. per-batch saturation times);
            it must have the same parameters and bounds.
        prior_strength
            Factor on the learned priors' weights λ_y and λ_p at inference (λ_q, the signal-model
            coupling, is kept): 1 (default) as trained; 0 switches Y_θ off and leaves P_θ only as
            the fit's starting point, i.e. a physics-only alternation of data consistency and fit.
            On content unlike the training data the learned priors can bias the maps (see
            ``benchmarks/results/real_data.md``).

        Returns
        -------
        PINQIOutput with the parameters ``(B, P, Y, X)`` and images ``(B, T, Y, X)`` of every
        iteration, in the units of ``kspace`` (M0 and images scale with it, R1 does not), and the
        data scale ``s`` ``(B,)`` the iterations ran at.

        Raises
        ------
        ValueError
            If a sample's k-space (or its coil maps or mask) gives an all-zero image, or NaN/Inf.
        """
        self._check_inputs(kspace, csm)
        if not (math.isfinite(prior_strength) and prior_strength >= 0):
            raise ValueError(f"prior_strength must be a finite number >= 0; got {prior_strength}")
        operator = self.operator(csm, mask, trajectory, density)
        q = signal_model if signal_model is not None else self.signal_model
        cfg = self.config
        lam = self.lambdas()

        y0 = self.initial_image(operator, kspace)
        scale, w = self.data_scale(y0), self.prior_weight(mask, kspace)
        kspace, y = kspace / scale.view(-1, *([1] * (kspace.ndim - 1))).to(kspace.dtype), y0 / scale.view(-1, 1, 1, 1)
        p = self.parameter_net(y, 0)
        priors = self._priors(y, p)
        images, parameters = [y], [p]
        parameter_prior = self._parameter_prior if prior_strength > 0 else self._no_parameter_prior
        for i in range(1, cfg.n_iterations + 1):
            # (1) y_i = argmin_y ||A y − k||² + λ_q ||y − q(p_{i−1})||² + λ_y ||y − Y_θ(y_{i−1})||²
            terms = [(getattr(lam, n)[i - 1] * w * (prior_strength if n == "y" else 1.0), term(q, p, y, i, priors))
                     for n, term in self._image_terms if n != "y" or prior_strength > 0]
            y = data_consistency(operator, kspace, terms, x0=y.detach(), tol=cfg.cg_tol, max_iter=cfg.cg_max_iter)
            # (2) p_i = argmin_p ||q(p) − y_i||² + λ_p ||p − P_θ(y_i)||²
            p_reg, lam_p = parameter_prior(priors, y, i, lam.p[i - 1] * w * prior_strength, p)
            p = self._solve_fit(q, y, p_reg, lam_p, p, i)
            images.append(y)
            parameters.append(p)
        image_scale = scale.view(-1, 1, 1, 1)
        return PINQIOutput(
            parameters=[self.rescale_parameters(v, scale) for v in parameters],
            images=[v * image_scale for v in images],
            scale=scale.abs(),
        )
