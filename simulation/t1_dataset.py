"""Synthetic saturation-recovery T1-mapping data, generated on the fly: ``T1MappingDataset``.

One sample (index ``i``, dataset seed ``s``) is a pure function of ``(s, i)``: a private
``torch.Generator`` seeded with :func:`sample_seed` drives, in this order, the slice choice, the
tissue values, the geometric augmentation, the smooth fields, the coil maps, the acceleration,
the sampling masks (or the radial rotation), the noise level and the noise. So sample ``i`` is
the same on every call, in every worker and on every machine (same torch version).

Pipeline
    tissue values (:mod:`simulation.tissues`) -> maps of one slice, resampled with the random
    affine (:mod:`simulation.augmentation`) to ``image_size`` -> ``T1 *= 1 + p``,
    ``M0 = PD · exp(bias) · e^{iφ}`` -> target ``(Re M0, Im M0, R1 = 1/T1)`` -> images
    ``q(p)`` by :class:`~simulation.signal_models.SaturationRecovery` -> fresh coil maps
    normalised inside the object -> k-space ``A(images) + noise``.

Background
    Outside the head PD = 0, so M0 = 0; T1 there is ``BACKGROUND_T1`` = 1 s times the smooth T1
    factor (R1 ≈ 1 /s), see :mod:`simulation.tissues`. The signal is zero, so the value only
    matters as a defined, smooth loss target; ``brain_mask`` marks where it matters.

Noise
    Complex Gaussian, standard deviation ``σ`` in the real and in the imaginary part, one σ per
    sample drawn uniformly from ``noise_sigma``; it is added only where k-space is sampled, so
    Cartesian k-space is exactly zero elsewhere. With the orthonormal FFT and coil maps with
    ``Σ|c|² = 1`` this is also the per-coil image-domain noise level, relative to PD <= 1.

Speed
    Nothing sample-independent is recomputed: polynomial bases, the line sampler and the signal
    model are built once; a slice's fractions are copied to one contiguous ``(K, Y, X)`` block
    per sample (each class plane is contiguous already, and the anatomy, possibly gigabytes for
    BrainWeb, is not duplicated). Cartesian line masks go through
    :class:`operators.line_sampling.LineSampler`, which transforms only the sampled lines along
    ``X`` (odd sizes and other masks use ``MultiCoilCartesianOp``), and noise is drawn only for the
    sampled lines. The result equals ``MultiCoilCartesianOp(csm, mask)(images)`` up to float
    rounding (tested).

Off the brain distribution (all off by default; the PINQI training presets switch them on)
    A second generator, seeded from the same ``(s, i)``, drives these switches, so a sample with
    all of them off is bit-identical to one made before they existed:

    - ``wide_t1``: share of samples whose class T1s are drawn log-uniformly from
      :data:`WIDE_T1_RANGE` (0.1–5 s) instead of the brain ranges;
    - ``inserts``: share of samples with 1–4 elliptical inserts painted over the anatomy, each
      with its own T1 (log-uniform in :data:`WIDE_T1_RANGE`) and PD (0.2–1.2);
    - ``intensity_scale`` ``(lo, hi)``: a log-uniform global factor on M0, images and k-space
      (noise included, so the SNR does not change);
    - ``global_phase``: a uniform global M0 phase in [−π, π) on top of the smooth phase field;
    - ``estimated_csm``: share of samples whose ``csm`` is estimated from the sample's own
      k-space (the fully sampled centre lines of the longest-delay acquisition, by
      ``csm_method``), exactly as a reconstruction of measured data must
      (:func:`operators.estimate_coil_maps` with ``contrast="longest"``). The target M0 and the noise-free images are
      then those the estimated maps can see: ``γ · M0`` with ``γ = Σ_c conj(ĉ_c) c_c`` per pixel
      (the least-squares image of fully sampled data under the estimated maps); R1 is unchanged.
      ``csm_true`` always holds the simulated maps.

Radial
    ``trajectory="radial"``: per-time rotated radial trajectories (``radial_trajectory(...,
    mode="rotated")``, rotated as a whole by a random angle per sample), k-space ``(T, C, K)`` by
    ``MultiCoilNUFFTOp`` (finufft on the CPU, fork-safe inside ``DataLoader`` worker processes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from operators.line_sampling import LineSampler

from .anatomy import Anatomy, resolve_anatomy
from .signal_models import SaturationRecovery
from .augmentation import AugmentationConfig, output_size, random_affine, random_smooth_fields, warp_linear_maps
from .off_distribution import WIDE_T1_RANGE, log_uniform, paint_inserts, share
from .tissues import map_weights, sample_tissue_values

__all__ = ["T1MappingDataset", "sample_seed", "PAPER_TIMES", "ABLATION_TIMES", "AccelerationSpec", "WIDE_T1_RANGE"]

#: Saturation times [s] of the paper's main experiments.
PAPER_TIMES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 8.0)
#: Saturation times [s] of the paper's ablation study.
ABLATION_TIMES: tuple[float, ...] = (0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 2.0, 8.0)
_REALISM_SALT = 0x5EA1

AccelerationSpec = float | int | tuple[float, float] | Sequence[float]

_SEED_MULT = 1_000_003


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` of a dataset with seed ``seed``: ``(seed · 1000003 + index) mod 2⁶³``."""
    return (int(seed) * _SEED_MULT + int(index)) % (1 << 63)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _parse_range(name: str, value: float | tuple[float, float], lower: float = 0.0) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        lo = hi = float(value)
    elif isinstance(value, Sequence) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    else:
        raise ValueError(f"{name} must be a number or a (low, high) pair; got {value!r}")
    if not lower <= lo <= hi:
        raise ValueError(f"{name} must satisfy {lower} <= low <= high; got ({lo}, {hi})")
    return lo, hi


def _parse_acceleration(value: AccelerationSpec) -> tuple[str, tuple[float, ...]]:
    """``4`` fixed; a 2-tuple ``(lo, hi)`` a uniform range; a list or a longer tuple a choice."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values: tuple[float, ...] = (float(value),)
        kind = "fixed"
    elif isinstance(value, tuple) and len(value) == 2:
        values, kind = (float(value[0]), float(value[1])), "range"
        if values[0] > values[1]:
            raise ValueError(f"acceleration range must be (low, high) with low <= high; got {value}")
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) >= 1:
        values, kind = tuple(float(v) for v in value), "choice"
    else:
        raise ValueError(f"acceleration must be a number, a (low, high) tuple or a list of choices; got {value!r}")
    if min(values) < 1:
        raise ValueError(f"acceleration must be >= 1; got {value!r}")
    return kind, values


class T1MappingDataset(Dataset):
    """On-the-fly synthetic saturation-recovery k-space with ground-truth T1 maps.

    Parameters
    ----------
    anatomy
        Tissue fractions; if None, ``load_anatomy(source, split, **anatomy_kwargs)``.
    source, split
        Passed to :func:`~simulation.anatomy.load_anatomy` when ``anatomy`` is None.
    length
        Number of samples (the index range; every index gives a different random sample).
    seed
        Dataset seed; sample ``i`` uses the generator seeded with ``sample_seed(seed, i)``.
    image_size
        Output ``(Y, X)`` or one int for square images (192 in the paper).
    n_coils
        Number of receiver coils C.
    times
        Saturation times [s], e.g. :data:`PAPER_TIMES` or :data:`ABLATION_TIMES`.
    acceleration
        ``4`` (fixed), ``(lo, hi)`` (uniform range, a tuple of two), or ``[4, 6, 8]`` /
        ``(4, 6, 8)`` (uniform choice; a list, or a tuple of length != 2).
    n_center
        Fully sampled central phase-encode lines (``None``: the sampling function's default).
    noise_sigma
        ``σ`` or ``(lo, hi)``: per-sample noise standard deviation (real and imaginary part each).
    trajectory
        ``"cartesian"`` (1-D variable-density masks along Y, one per time) or ``"radial"``.
    n_spokes
        Radial only: spokes per time; default ``round(π/2 · max(Y, X) / acceleration)``.
    n_readout
        Radial only: samples per spoke; default ``2 · max(Y, X)`` (twofold readout oversampling).
    augmentation
        :class:`~simulation.augmentation.AugmentationConfig` (default: the paper-like settings).
    fov_mm
        Field of view of the output; default the larger extent of the anatomy grid.
    dtype
        ``torch.complex64`` (default) or ``torch.complex128``; real outputs use the matching
        real dtype.
    anatomy_kwargs
        Extra arguments to ``load_anatomy`` (``cache_dir``, ``download``, ``shape``, ...).
    wide_t1, inserts, estimated_csm
        Shares in [0, 1] of samples with wide T1 ranges, with elliptical inserts, and with coil maps
        estimated from their own k-space (module docstring).
    intensity_scale
        ``(lo, hi)``: log-uniform global intensity factor; ``(1, 1)`` (default) leaves it out.
    calibration_lines
        Cartesian: fully sampled centre lines (ACS) added to the longest-delay acquisition on
        top of its accelerated lines (:func:`operators.with_calibration_lines`); 0: none.
    csm_method
        Estimator of the ``estimated_csm`` maps (``"walsh"``, ``"inati"`` or ``"espirit"``).
    global_phase
        Draw a uniform global M0 phase.

    Notes
    -----
    ``__getitem__`` returns a dict:

    ``kspace`` ``(T, C, Y, X)`` complex (radial ``(T, C, K)``), zero where not sampled;
    ``mask`` ``(T, Y, X)`` bool (Cartesian only); ``trajectory`` ``(T, 2, K)`` (radial only);
    ``csm`` ``(C, Y, X)`` complex; ``params`` ``(3, Y, X)`` real = (Re M0, Im M0, R1 [1/s]);
    ``images`` ``(T, Y, X)`` complex, noise-free; ``brain_mask`` ``(Y, X)`` bool;
    ``times`` ``(T,)`` [s]; ``sigma`` ``()``; ``acceleration`` ``()`` (nominal; radial: Nyquist
    spokes / spokes); ``slice_index`` ``()`` long (index into the anatomy's slices);
    ``csm_true`` ``(C, Y, X)`` the simulated coil maps (equal to ``csm`` unless estimated).
    """

    def __init__(
        self,
        anatomy: Anatomy | None = None,
        *,
        source: str = "mni152",
        split: str = "train",
        length: int = 1000,
        seed: int = 0,
        image_size: int | tuple[int, int] = 192,
        n_coils: int = 8,
        times: Sequence[float] | torch.Tensor = PAPER_TIMES,
        acceleration: AccelerationSpec = 4,
        n_center: int | None = None,
        noise_sigma: float | tuple[float, float] = (0.001, 0.04),
        trajectory: str = "cartesian",
        n_spokes: int | None = None,
        n_readout: int | None = None,
        augmentation: AugmentationConfig | None = None,
        fov_mm: float | None = None,
        dtype: torch.dtype = torch.complex64,
        anatomy_kwargs: dict | None = None,
        wide_t1: float = 0.0,
        inserts: float = 0.0,
        estimated_csm: float = 0.0,
        intensity_scale: tuple[float, float] = (1.0, 1.0),
        global_phase: bool = False,
        calibration_lines: int = 0,
        csm_method: str = "walsh",
    ) -> None:
        super().__init__()
        anatomy = resolve_anatomy(anatomy, source, split, anatomy_kwargs)
        if int(length) < 0:
            raise ValueError(f"length must be >= 0; got {length}")
        if int(n_coils) < 1:
            raise ValueError(f"n_coils must be >= 1; got {n_coils}")
        if dtype not in (torch.complex64, torch.complex128):
            raise TypeError(f"dtype must be torch.complex64 or torch.complex128; got {dtype}")
        if trajectory not in ("cartesian", "radial"):
            raise ValueError(f"trajectory must be 'cartesian' or 'radial'; got {trajectory!r}")
        t = torch.as_tensor(times, dtype=torch.float64).flatten()
        if t.numel() < 1 or not bool((t > 0).all()):
            raise ValueError(f"times must be a non-empty sequence of positive seconds; got {times!r}")
        self.anatomy = anatomy
        self.length = int(length)
        self.seed = int(seed)
        self.image_size = output_size(image_size)
        self.n_coils = int(n_coils)
        self.dtype = dtype
        self.real_dtype = torch.float32 if dtype == torch.complex64 else torch.float64
        self.times = t.to(self.real_dtype)
        self.acceleration_kind, self.acceleration_values = _parse_acceleration(acceleration)
        self.n_center = n_center
        self.noise_sigma = _parse_range("noise_sigma", noise_sigma)
        self.trajectory = trajectory
        self.n_spokes = n_spokes
        self.n_readout = n_readout
        self.augmentation = AugmentationConfig() if augmentation is None else augmentation
        self.fov_mm = fov_mm
        self._lines = LineSampler(self.image_size, self.real_dtype)
        self._signal_model = SaturationRecovery(self.times)
        self.wide_t1 = share("wide_t1", wide_t1)
        self.inserts = share("inserts", inserts)
        self.estimated_csm = share("estimated_csm", estimated_csm)
        self.intensity_scale = _parse_range("intensity_scale", intensity_scale, lower=1e-30)
        self.global_phase = bool(global_phase)
        self.calibration_lines = int(calibration_lines)
        if not 0 <= self.calibration_lines <= min(self.image_size):
            raise ValueError(f"calibration_lines must be in [0, {min(self.image_size)}]; got {calibration_lines!r}")
        if csm_method not in ("walsh", "inati", "espirit"):
            raise ValueError(f"csm_method must be 'walsh', 'inati' or 'espirit'; got {csm_method!r}")
        self.csm_method = csm_method
        if self.estimated_csm > 0 and trajectory != "cartesian":
            raise ValueError("estimated_csm needs Cartesian k-space with fully sampled centre lines")

    def __len__(self) -> int:
        return self.length

    # -- pieces ------------------------------------------------------------------------------

    def _draw_acceleration(self, g: torch.Generator) -> float:
        vals = self.acceleration_values
        if self.acceleration_kind == "fixed":
            return vals[0]
        if self.acceleration_kind == "range":
            return _uniform(g, vals[0], vals[1])
        return vals[int(torch.randint(len(vals), (), generator=g))]

    def _maps(self, g: torch.Generator, n: int, extra: torch.Generator) -> dict[str, torch.Tensor]:
        """Augmented maps of slice ``n``: pd, t1 (with T1 polynomial), bias·phase, brain, tissue."""
        a = self.anatomy
        values = sample_tissue_values(a.class_names, g)
        if self.wide_t1 > 0 and float(torch.rand((), generator=extra)) < self.wide_t1:
            values[:, 0] = log_uniform(extra, *WIDE_T1_RANGE, values.shape[0]).to(values.dtype)
        w, b, names = map_weights(values, a.class_names, with_t2=False)
        theta = random_affine(a.shape, a.voxel_size_mm, self.image_size, self.augmentation, g, self.fov_mm)
        maps = warp_linear_maps(self.anatomy.fractions[:, n].contiguous(), w, b, theta, self.image_size)
        out = dict(zip(names, maps.unbind(0)))
        cfg = self.augmentation
        fields = random_smooth_fields(
            self.image_size,
            (cfg.t1_degree, cfg.bias_degree, cfg.phase_degree),
            (cfg.t1_max_rel, cfg.bias_max_log, cfg.phase_max),
            g,
        )
        out["t1"] = out["t1"] * (1 + fields[0])
        out["bias"] = fields[1].exp()
        out["phase"] = fields[2]
        out["pd"] = out["pd"].clamp_min(0)
        if self.inserts > 0 and float(torch.rand((), generator=extra)) < self.inserts:
            paint_inserts(out, extra)
        return out

    def _coil_maps(self, g: torch.Generator, tissue: torch.Tensor) -> torch.Tensor:
        from operators import simulate_coil_maps

        obj = tissue > 0.05
        return simulate_coil_maps(self.n_coils, self.image_size, object_mask=obj, generator=g, dtype=self.dtype)

    def _cartesian_kspace(
        self, images: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor, sigma: float, g: torch.Generator
    ) -> torch.Tensor:
        if not self._lines.applies(mask):
            from operators import MultiCoilCartesianOp

            k = MultiCoilCartesianOp(csm[None], mask[None])(images[None])[0]
            noise = torch.randn(*k.shape, 2, generator=g, dtype=self.real_dtype)
            return k + sigma * torch.view_as_complex(noise) * mask[:, None]
        sampled, lines = self._lines(images, csm, mask)
        noise = torch.randn(*sampled.shape, 2, generator=g, dtype=self.real_dtype)
        sampled.add_(torch.view_as_complex(noise), alpha=sigma)
        return LineSampler.scatter(sampled, lines, csm.shape[0], self.image_size)

    def _radial(
        self, images: torch.Tensor, csm: torch.Tensor, accel: float, sigma: float, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        from operators import MultiCoilNUFFTOp, radial_trajectory

        n = max(self.image_size)
        spokes = self.n_spokes if self.n_spokes is not None else max(1, round(math.pi / 2 * n / accel))
        readout = self.n_readout if self.n_readout is not None else 2 * n
        traj = radial_trajectory(images.shape[0], spokes, readout, mode="rotated").to(self.real_dtype)
        ang = _uniform(g, -math.pi, math.pi)
        rot = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=self.real_dtype)
        traj = torch.remainder(torch.einsum("ij,tjk->tik", rot, traj) + math.pi, 2 * math.pi) - math.pi
        op = MultiCoilNUFFTOp(csm[None], traj[None])
        k = op(images[None])[0]
        noise = torch.randn(*k.shape, 2, generator=g, dtype=self.real_dtype)
        k = k + sigma * torch.view_as_complex(noise)
        return {
            "kspace": k.to(self.dtype),
            "trajectory": traj,
            "acceleration": torch.tensor(math.pi / 2 * n / spokes, dtype=self.real_dtype),
        }

    # -- sample ------------------------------------------------------------------------------

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.length <= int(index) < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        index = int(index) % self.length
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        extra = torch.Generator().manual_seed(sample_seed(self.seed, index) ^ _REALISM_SALT)
        n = int(torch.randint(self.anatomy.n_slices, (), generator=g))
        m = self._maps(g, n, extra)
        rdt = self.real_dtype
        phase = m["phase"]
        if self.global_phase:
            phase = phase + math.pi * (2 * float(torch.rand((), generator=extra, dtype=torch.float64)) - 1)
        m0 = torch.polar(m["pd"] * m["bias"], phase)
        params = torch.stack([m0.real, m0.imag, 1.0 / m["t1"]]).to(rdt)
        images = self._signal_model(params[None])[0].to(self.dtype)
        csm = self._coil_maps(g, m["tissue"]).to(self.dtype)
        accel = self._draw_acceleration(g)
        out: dict[str, torch.Tensor] = {}
        if self.trajectory == "cartesian":
            from operators import variable_density_mask, with_calibration_lines

            mask = variable_density_mask(
                len(self.times), self.image_size, accel, n_center=self.n_center, generator=g
            ).bool()
            if self.calibration_lines:
                mask = with_calibration_lines(mask, int(self.times.argmax()), self.calibration_lines)
            sigma = _uniform(g, *self.noise_sigma)
            out["kspace"] = self._cartesian_kspace(images, csm, mask, sigma, g)
            out["mask"] = mask
            out["acceleration"] = torch.tensor(accel, dtype=rdt)
        else:
            sigma = _uniform(g, *self.noise_sigma)
            out.update(self._radial(images, csm, accel, sigma, g))
        csm_true = csm
        if self.estimated_csm > 0 and float(torch.rand((), generator=extra)) < self.estimated_csm:
            csm, gamma = self._estimate_csm(out["kspace"], out["mask"], csm_true)
            params = torch.cat([torch.view_as_real(torch.complex(params[0], params[1]) * gamma).movedim(-1, 0),
                                params[2:]]).to(rdt)
            images = images * gamma
        alpha = float(log_uniform(extra, *self.intensity_scale, 1)) if self.intensity_scale != (1.0, 1.0) else 1.0
        if alpha != 1.0:
            out["kspace"] = out["kspace"] * alpha
            params = torch.cat([params[:2] * alpha, params[2:]])
            images = images * alpha
            sigma = sigma * alpha
        out.update(
            csm=csm,
            csm_true=csm_true,
            params=params,
            images=images,
            brain_mask=m["brain"] >= 0.5,
            times=self.times.clone(),
            sigma=torch.tensor(sigma, dtype=rdt),
            slice_index=torch.tensor(n, dtype=torch.long),
        )
        return out

    def _estimate_csm(
        self, kspace: torch.Tensor, mask: torch.Tensor, csm_true: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps from the longest delay's centre lines and ``γ = Σ_c conj(ĉ_c) c_c`` ``(Y, X)``."""
        from operators import estimate_coil_maps

        csm = estimate_coil_maps(
            kspace, self.csm_method, mask=mask, contrast="longest", times=self.times
        ).to(self.dtype)
        gamma = (csm.conj() * csm_true).sum(0)
        return csm, gamma

    def __repr__(self) -> str:
        acc = self.acceleration_values if self.acceleration_kind != "fixed" else self.acceleration_values[0]
        return (
            f"T1MappingDataset(source={self.anatomy.source!r}, split={self.anatomy.split!r}, length={self.length}, "
            f"seed={self.seed}, image_size={self.image_size}, n_coils={self.n_coils}, "
            f"times={tuple(self.times.tolist())}, acceleration={acc} ({self.acceleration_kind}), "
            f"trajectory={self.trajectory!r})"
        )
