"""How well could *any* method know the unknown intensity scales? ``python -m benchmarks.w2q_scale_bound``

W2Q sees each weighted image up to an unknown global scale ``s_c`` (log-uniform in 0.5–2), and
the tissue values (T1, T2, PD of grey matter, white matter and CSF) are drawn uniformly from the
wide :data:`simulation.tissues.TISSUE_RANGES`. A change of the scales can be absorbed by a
change of the tissue values, so the scales, and with them the maps, are only known as well as
the tissue-value prior and the partial-volume pixels pin them down. This script computes that
limit for an idealised estimator that knows far more than any real method:

* the exact tissue fractions of every pixel (the anatomy), the protocol, and that there is no
  bias field;
* the exact signal of each pure tissue (as if averaged over infinitely many pure pixels).

What it does not know: the three scales ``s_c`` and the nine tissue values. For a grid of
relative scales ``a`` (``s_c · a_c`` in place of ``s_c``) the pure-tissue signals fix the tissue
values ``v'_k(a)`` exactly (``a_c q_c(v'_k) = q_c(v_k)``, a 3×3 nonlinear solve per tissue). The
posterior weight of ``a`` is

    prior of the scales · Π_k [v'_k(a) inside its range] / (|det ∂q/∂v (v'_k)| Π_c a_c)
    · exp(−Σ_{mixed pixels, c} (a_c q_c(m'(x)) − q_c(m(x)))² / (2 σ_c²))

(the tissue values' uniform prior carried through the change of variables, and the Gaussian
likelihood of the partial-volume pixels, whose maps ``m'(x) = Σ_k f_k(x) v'_k`` mix *values*,
not signals, so the signal model's nonlinearity makes them informative). ``σ_c`` is
``noise_rel`` times the contrast's mean signal in the brain, the dataset's noise convention.
The best an estimator can do in mean square is the posterior mean of the maps. It is scored as
:mod:`benchmarks.w2q` scores a method (PSNR with the true map's peak in the brain, MAPE), averaged
over the truth distributed as the posterior: the expected score of this ideal estimator on data
like the draw. (The expected PSNR, an average of logarithms, exceeds the PSNR of the expected
squared error by several dB when the error is a single global factor, as it is for PD. An
estimator tuned to PSNR rather than squared error could score slightly higher than this one.)

The partial-volume information comes from a convention of the simulation: a mixed pixel gets the
signal of the fraction-weighted *maps* (as in BrainWeb-style simulations), so a wrong relative
scale leaves mixed pixels that no tissue values explain. In a real voxel the *signals* of the
tissues add; then ``a_c Σ_k f_k q_c(v'_k) = Σ_k f_k q_c(v_k)`` holds in every pixel and the mixed
pixels carry no information on the scales: the "prior only" rows (``noise_rel = inf``) are what
is left with physical partial volumes.

Every simplification errs towards the estimator (exact anatomy, no bias field, noise-free pure
tissue signals, tissue values held at the pure-tissue solution rather than re-fitted to the
mixed pixels, and the FLAIR sign ambiguity ignored), so the scores are an optimistic reference
for methods that see what W2Q sees. Results go to ``benchmarks/results/w2q_scale_bound.md``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.w2q import TARGETS, test_fractions
from pinqi.w2q.data import BandedProtocolDataset
from pinqi.w2q.model import LOG_BOUNDS, from_log_maps, to_log_maps
from pinqi.w2q.protocols import PARAMETERS
from pinqi.w2q.signal import MultiContrastSignal
from simulation import load_anatomy
from simulation.tissues import BACKGROUND_T1, BACKGROUND_T2, TISSUE_RANGES, TissueRange, sample_tissue_values
from simulation.weighted_dataset import ProtocolRanges
from solvers import nonlinear_fit

RESULTS = Path(__file__).parent / "results" / "w2q_scale_bound.md"
SCALE_PRIOR = ProtocolRanges().scale  # the dataset's global intensity scale range


@dataclass
class ScalePosterior:
    """The posterior over relative scales of one (anatomy, tissue values, protocol) draw.

    Attributes
    ----------
    log_scales
        ``(G, 3)`` grid of ``ln a`` (relative scale of T1w, T2w, FLAIR; 0 = the truth).
    weights
        ``(G,)`` normalised posterior weights (0 where a tissue value leaves its range).
    psnr, mape
        Per parameter ("pd", "t1", "t2"): the posterior-mean estimator's expected PSNR [dB] and
        MAPE [%] in the brain (the truth distributed as the posterior).
    spread
        Per parameter: posterior standard deviation of each tissue's value relative to the truth
        [%], ``(K,)``.
    """

    log_scales: torch.Tensor
    weights: torch.Tensor
    psnr: dict[str, float]
    mape: dict[str, float]
    spread: dict[str, torch.Tensor]


def _maps(fractions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``(G, K, 3)`` (PD, T1, T2) tissue values and ``(K, N)`` fractions -> ``(G, 3, N)`` maps
    (linear in the fractions, background values where they sum below 1, as :func:`tissue_maps`)."""
    rest = 1.0 - fractions.sum(0)
    background = torch.tensor([0.0, BACKGROUND_T1, BACKGROUND_T2], dtype=values.dtype)
    return torch.einsum("gkp,kn->gpn", values, fractions) + background[None, :, None] * rest


def _signal(signal: MultiContrastSignal, maps: torch.Tensor) -> torch.Tensor:
    """``(G, 3, N)`` maps -> ``(G, 3, N)`` signals of the one protocol of ``signal``."""
    return signal(maps.transpose(0, 1)[None])[0].transpose(0, 1)


def scale_posterior(
    fractions: torch.Tensor,
    class_names: tuple[str, ...],
    values: torch.Tensor,
    sequence_params: torch.Tensor,
    sequence_types: torch.Tensor,
    scale: torch.Tensor,
    noise_rel: float,
    log_scales: torch.Tensor,
    ranges: dict[str, TissueRange] | None = None,
    chunk: int = 2048,
) -> ScalePosterior:
    """The posterior over relative scales on ``log_scales`` (module docstring).

    Parameters
    ----------
    fractions
        ``(K, N)`` tissue fractions of the N brain pixels.
    class_names
        The K tissue names (keys of ``ranges``).
    values
        ``(K, 3)`` true (PD, T1 [s], T2 [s]) of each tissue.
    sequence_params, sequence_types
        ``(3, 4)`` (TR [s], TE [s], TI [s], FA [deg]) and ``(3,)`` sequence ids of T1w, T2w, FLAIR.
    scale
        ``(3,)`` true scales (only their prior range matters: ``scale · a`` must stay in
        :data:`SCALE_PRIOR`).
    noise_rel
        Noise standard deviation relative to each contrast's mean signal in the brain.
    log_scales
        ``(G, 3)`` grid of ``ln a``; include 0 (the truth).
    ranges
        Uniform prior of each tissue's values, default :data:`TISSUE_RANGES`.
    """
    ranges = TISSUE_RANGES if ranges is None else ranges
    dtype = torch.float64
    fractions, values, scale = fractions.to(dtype), values.to(dtype), scale.to(dtype)
    g, k = log_scales.shape[0], values.shape[0]
    signal = MultiContrastSignal(sequence_params[None].to(dtype), sequence_types[None], magnitude_eps=1e-9)
    a = log_scales.to(dtype).exp()  # (G, 3)

    # tissue values that explain the pure-tissue signals under each relative scale
    pure = _signal(signal, values.T[None])  # (1, 3, K)
    target = (pure / a[..., None]).transpose(0, 1)[None]  # (1, 3, G, K)
    u0 = to_log_maps(values.T[None, :, None, :].expand(1, 3, g, k).contiguous())
    with torch.no_grad():
        u = nonlinear_fit(lambda u: signal(from_log_maps(u)), target, u0, 1e-12, bounds=LOG_BOUNDS,
                          solver="gauss-newton", max_iter=60, tol=1e-13)
    solved = from_log_maps(u)[0].permute(1, 2, 0)  # (G, K, 3)
    residual = (_signal(signal, solved.transpose(1, 2)) - target[0].transpose(0, 1)).abs()  # (G, 3, K)
    exact = (residual <= 1e-6 * pure.abs().amax(-1, keepdim=True).clamp_min(1e-12)).all(1)  # (G, K)

    box = torch.tensor([[getattr(ranges[n], p) for p in ("pd", "t1", "t2")] for n in class_names], dtype=dtype)
    inside = ((solved >= box[..., 0] * (1 - 1e-9)) & (solved <= box[..., 1] * (1 + 1e-9))).all(-1)  # (G, K)
    absolute = scale[None] * a
    prior = ((absolute >= SCALE_PRIOR[0]) & (absolute <= SCALE_PRIOR[1])).all(-1)
    feasible = (exact & inside).all(-1) & prior  # (G,)

    # |det ∂q/∂v| at the solved values (central differences in (PD, T1, T2))
    jac = torch.empty(g, k, 3, 3, dtype=dtype)
    for j in range(3):
        h = 1e-6 * solved[..., j].abs().clamp_min(1e-3)
        step = torch.zeros_like(solved)
        step[..., j] = h
        up = _signal(signal, (solved + step).transpose(1, 2))
        down = _signal(signal, (solved - step).transpose(1, 2))
        jac[..., j] = ((up - down) / (2 * h[:, None, :])).transpose(1, 2)
    log_det = torch.linalg.slogdet(jac).logabsdet.sum(-1)  # (G,)

    # Gaussian likelihood of all brain pixels (pure ones contribute ~0)
    truth = _maps(fractions, values[None])  # (1, 3, N)
    clean = _signal(signal, truth)  # (1, 3, N)
    sigma = noise_rel * clean.abs().mean(-1, keepdim=True)  # (1, 3, 1)
    log_like = torch.zeros(g, dtype=dtype)
    for i in range(0, g, chunk):
        s = slice(i, i + chunk)
        model = a[s, :, None] * _signal(signal, _maps(fractions, solved[s]))
        log_like[s] = -0.5 * ((model - clean) / sigma).square().sum((1, 2))

    log_w = log_like - log_det - k * a.log().sum(-1)
    log_w = torch.where(feasible, log_w, torch.full_like(log_w, -math.inf))
    weights = torch.softmax(log_w, 0)

    # the posterior-mean maps scored as benchmarks.w2q scores (per-slice PSNR with the truth's peak,
    # MAPE), averaged over the truth distributed as the posterior
    keep = weights > 1e-12 * weights.max()
    w = weights[keep] / weights[keep].sum()
    maps = _maps(fractions, solved[keep])  # (G', 3, N)
    mean = torch.einsum("g,gpn->pn", w, maps)
    rmse = (maps - mean).square().mean(-1).sqrt().clamp_min(1e-12)  # (G', 3)
    psnr_g = 20 * torch.log10(maps.amax(-1) / rmse)
    ape = torch.einsum("g,gpn->p", w, ((maps - mean) / maps.clamp_min(1e-6)).abs()) / maps.shape[-1]
    psnr = {p: float(w @ psnr_g[:, i]) for i, p in enumerate(PARAMETERS)}
    mape = {p: float(100 * ape[i]) for i, p in enumerate(PARAMETERS)}
    vals = solved[keep]
    centred = vals - torch.einsum("g,gkp->kp", w, vals)
    std = torch.einsum("g,gkp->kp", w, centred.square()).sqrt()  # (K, 3)
    spread = {p: 100 * std[:, i] / values[:, i] for i, p in enumerate(PARAMETERS)}
    return ScalePosterior(log_scales, weights, psnr, mape, spread)


def scale_grid(centre: torch.Tensor, half_width: torch.Tensor, n: int) -> torch.Tensor:
    """``(n³, 3)`` regular grid of ``ln a`` around ``centre`` ``(3,)`` with ``half_width`` ``(3,)``,
    plus the truth (0, 0, 0) as its last row."""
    axes = [torch.linspace(float(c - h), float(c + h), n, dtype=torch.float64) for c, h in zip(centre, half_width)]
    grid = torch.cartesian_prod(*axes)
    return torch.cat([grid, torch.zeros(1, 3, dtype=torch.float64)])


def _support(post: ScalePosterior) -> torch.Tensor:
    """Grid points with a weight above 1e-9 of the largest."""
    return post.log_scales[post.weights > 1e-9 * post.weights.max()]


def refined_posterior(*args, n_coarse: int = 25, n_fine: int = 21, coarse_half_width: float = math.log(2.0),
                      min_support: int = 100, max_refinements: int = 2, **kwargs) -> ScalePosterior:
    """:func:`scale_posterior` on a coarse grid, then on a finer grid over its support (weights
    above 1e-9 of the largest, widened by one step of the last grid), and again (at most
    ``max_refinements`` in all) while fewer than ``min_support`` points carry weight: a support of
    a few points would understate the spread."""
    step = torch.full((3,), 2 * coarse_half_width / (n_coarse - 1), dtype=torch.float64)
    post = scale_posterior(*args, log_scales=scale_grid(torch.zeros(3), torch.full((3,), coarse_half_width), n_coarse),
                           **kwargs)
    for i in range(max_refinements):
        support = _support(post)
        if i > 0 and len(support) >= min_support:
            break
        lo, hi = support.amin(0) - step, support.amax(0) + step
        post = scale_posterior(*args, log_scales=scale_grid((lo + hi) / 2, (hi - lo) / 2, n_fine), **kwargs)
        step = (hi - lo) / (n_fine - 1)
    return post


def common_scale_posterior(fractions: torch.Tensor, class_names: tuple[str, ...], values: torch.Tensor,
                           sequence_params: torch.Tensor, sequence_types: torch.Tensor, scale: torch.Tensor,
                           n: int = 201) -> ScalePosterior:
    """:func:`scale_posterior` along ``a = (α, α, α)`` only: the direction that leaves every image
    unchanged (PD absorbs it), so no noise level or partial volume narrows it. α on ``n`` points
    over 1/2–2, then on ``n`` points over the support (widened by one step)."""
    args = (fractions, class_names, values, sequence_params, sequence_types, scale, math.inf)

    def on_line(lo: float, hi: float) -> ScalePosterior:
        t = torch.linspace(lo, hi, n, dtype=torch.float64)
        return scale_posterior(*args, torch.cat([t[:, None].expand(-1, 3), torch.zeros(1, 3, dtype=torch.float64)]))

    step = 2 * math.log(2.0) / (n - 1)
    support = _support(on_line(-math.log(2.0), math.log(2.0)))[:, 0]
    return on_line(float(support.min()) - step, float(support.max()) + step)


def draws(n_slices: int, per_slice: int, image_size: int, seed: int = 0):
    """(fractions ``(K, N)`` of the brain pixels, class names, values ``(K, 3)`` (PD, T1, T2), protocol,
    scale) of ``per_slice`` random tissue values and held-out protocols on each of ``n_slices`` test slices."""
    frac, names, brain = test_fractions(n_slices, image_size)
    protocols = BandedProtocolDataset(load_anatomy("phantom", "test", shape=(8, 8)), length=1, image_size=8,
                                      part="held_out")
    g = torch.Generator().manual_seed(seed)
    for s in range(frac.shape[1]):
        for _ in range(per_slice):
            t1_t2_pd = sample_tissue_values(names, g).double()
            values = t1_t2_pd[:, [2, 0, 1]]
            seq, types = protocols.draw_protocol(g)
            u = torch.rand(3, generator=g, dtype=torch.float64)
            scale = torch.exp(math.log(SCALE_PRIOR[0]) + math.log(SCALE_PRIOR[1] / SCALE_PRIOR[0]) * u)
            yield frac[:, s][:, brain[s]], names, values, seq, types, scale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-slices", type=int, default=8)
    parser.add_argument("--per-slice", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--noise", type=float, nargs="+", default=[math.inf, 0.005],
                        help="noise std relative to the mean signal; inf ignores the partial-volume pixels")
    parser.add_argument("--pd-per-slice", type=int, default=50,
                        help="draws per slice for PD along the common-scale direction alone")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    sample = list(draws(args.n_slices, args.per_slice, args.image_size))
    rows: dict[float, list[ScalePosterior]] = {}
    for noise in args.noise:
        rows[noise] = []
        for i, draw in enumerate(sample):
            post = refined_posterior(*draw, noise)
            rows[noise].append(post)
            print(f"noise {noise:g} draw {i}: PSNR " + " ".join(f"{p} {post.psnr[p]:.1f}" for p in PARAMETERS)
                  + " | MAPE " + " ".join(f"{p} {post.mape[p]:.2f}" for p in PARAMETERS), flush=True)
    common = [common_scale_posterior(*draw)
              for draw in draws(args.n_slices, args.pd_per_slice, args.image_size, seed=1)]
    text = report(rows, common, sample[0][1], args, time.perf_counter() - started)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


def _db(value: float) -> str:
    return "> 60" if value > 60 else f"{value:.1f}"


def report(rows: dict[float, list[ScalePosterior]], common: list[ScalePosterior], names: tuple[str, ...],
           args: argparse.Namespace, seconds: float) -> str:
    n = len(next(iter(rows.values())))
    lines = ["# How well can the intensity scales be known? (`python -m benchmarks.w2q_scale_bound`)", ""]
    lines += [f"{n} draws: {args.n_slices} MNI152 test slices × {args.per_slice} random tissue values, scales and "
              f"held-out protocols, {args.image_size}² pixels; {seconds:.0f} s. The idealised estimator knows the "
              "anatomy (every pixel's tissue fractions), the protocol, that there is no bias field, and each pure "
              "tissue's signal; it does not know the three scales or the nine tissue values (module docstring). "
              "Its expected scores (posterior-mean maps, scored as `benchmarks.w2q` scores, the truth distributed "
              "as the posterior) are an optimistic reference for a method that sees only the images and the "
              "protocol; compare the mean PSNR with the mean PSNR that `benchmarks.w2q` reports. "
              "*prior only*: the tissue-value ranges alone (the partial-volume pixels ignored); "
              "*with partial volumes*: their likelihood added at the given noise.", ""]
    lines += [f"| information | param | ideal PSNR [dB]: mean; median (min–max) | draws > {TARGETS['psnr']:g} dB | "
              "ideal MAPE [%]: median | posterior std of " + ", ".join(names) + " [%]: median |",
              "|---|---|---|---|---|---|"]
    for noise, posts in rows.items():
        label = "prior only" if math.isinf(noise) else f"with partial volumes, noise {100 * noise:g} %"
        for p in PARAMETERS:
            psnr = torch.tensor([r.psnr[p] for r in posts])
            mape = torch.tensor([r.mape[p] for r in posts])
            spread = torch.stack([r.spread[p] for r in posts]).median(0).values
            spread_db = f"{_db(psnr.median())} ({_db(psnr.min())}–{_db(psnr.max())})"
            lines.append(f"| {label} | {p.upper()} | {_db(psnr.mean())}; {spread_db} | "
                         f"{int((psnr > TARGETS['psnr']).sum())}/{len(posts)} | {mape.median():.2f} | "
                         + ", ".join(f"{v:.2f}" for v in spread.tolist()) + " |")
    psnr = torch.tensor([r.psnr["pd"] for r in common])
    half = 1.96 * psnr.std() / math.sqrt(len(psnr))
    lines += ["", f"PD along the common-scale direction alone (all three images scaled alike, which only PD absorbs; "
              "no noise level or partial volume narrows it; with partial volumes it is all that is left of the "
              "posterior, and a grid on this line resolves it better than the 3-D grid above), "
              f"{len(common)} further draws: ideal PSNR mean "
              f"{psnr.mean():.1f} dB (95 % interval of the mean ± {half:.1f} dB), median {psnr.median():.1f}, "
              f"{int((psnr > TARGETS['psnr']).sum())}/{len(psnr)} draws > {TARGETS['psnr']:g} dB; ideal MAPE median "
              f"{torch.tensor([r.mape['pd'] for r in common]).median():.2f} %."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
