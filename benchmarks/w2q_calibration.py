"""Part 3 of ``python -m benchmarks.w2q``: where W2Q's tissue-value errors come from.

**Why a prior is needed at all.** Each weighted image is known only up to a global scale per
contrast. Three contrasts (T1w, T2w, FLAIR) of a brain of CSF, GM and WM carry 9 pure-tissue
signals ``m_kc`` for 9 tissue values ``v_k`` = (PD, T1, T2) and 3 scales ``a_c``: two degrees of
freedom more than observations (PD and a common scale are interchangeable, and a second direction
trades the scales against the tissue values). Partial volumes do not help: in a real voxel the
tissue *signals* add, which any (scales, values) explaining the pure tissues also explains. Only
prior knowledge of tissue values fixes the rest.

**Ideal tissue calibration** (:func:`solve_tissue_map`, :func:`ideal_calibration`). The MAP

    ``min_{a, v} ½ Σ_{k, c} ((a_c q_c(v_k) − m_kc) / σ_kc)² + ½ Σ_{k, j} ((ln v_kj − μ_kj) / s_kj)²``

with ``q_c`` the contrast's signal model, a log-normal prior per tissue and parameter matching the
uniform ranges of :data:`simulation.tissues.W2Q_TISSUE_PRIOR` (W2Q's training prior, literature
3 T values), and ``σ_kc`` = 1 % of the contrast's mean tissue signal plus 2 % of the brightest
*other* tissue's (a "pure" pixel hides some CSF, which in a long-TE T2w image is 15 times brighter
than grey matter). Run on (a) the *exact* pure-tissue signals — what the prior leaves to any
method that knows each tissue's signal — and (b) the images' medians over the *true* pure pixels
(fraction > 0.95) — adding what partial volume does to "pure" pixels on the model's training grid.

**Prior edges** (:func:`edge_summaries`): W2Q, and the MAP from exact signals, with every WM, GM
and CSF value at the lower, then the upper edge of the prior.

**Slice content** (:func:`slice_dependence`, :func:`generator_bias`): W2Q's pure-WM T1 per test
slice, and on its own training generator per slice and pixel-weighted. The network calibrates
every slice on its own, and its error depends on what the slice holds.

**The product's calibration** (:mod:`pinqi.w2q.calibration`, ``pinqi map``'s default) uses this MAP
on the pure CSF and WM that the network segments in the whole volume; :class:`TissueCalibrated`
runs it in the benchmark (row "W2Q + tissue calibration" of parts 1 and 2, and here at the prior's
edges and for the :data:`OTHER_VALUES`, :func:`value_sets`). An earlier variant that also used grey
matter and re-centred inside the iterations was worse (GM T2 +8.7 %; branch
``experiment/w2q-tissue-calibration``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from benchmarks import w2q_clinical as clinical
from pinqi.w2q.calibration import CALIBRATION_CLASSES, solve_tissue_map
from pinqi.w2q.data import BandedProtocolDataset
from pinqi.w2q.model import W2Q
from pinqi.w2q.protocols import data_settings
from pinqi.w2q.signal import MultiContrastSignal
from pinqi.w2q.volume import map_volume
from simulation import load_anatomy
from simulation.tissues import BRAIN_CLASSES, W2Q_TISSUE_PRIOR, TissueRange

ROI_COLUMNS = tuple(f"{c} {p}" for c in ("wm", "gm") for p in ("t1", "t2", "pd"))
#: Tissue values {tissue: (T1 [s], T2 [s], PD)} other than the benchmark's literature set, for the
#: calibration's behaviour off the prior's centre: values like Wansapura et al. 1999 (3 T; GM T2
#: just above the prior's range), and a set in the prior's range but away from its centre.
OTHER_VALUES: dict[str, dict[str, tuple[float, float, float]]] = {
    "Wansapura-like (WM 0.83 s / 80 ms, GM 1.33 s / 105 ms)":
        {"csf": (4.3, 2.0, 1.0), "gm": (1.33, 0.105, 0.80), "wm": (0.83, 0.080, 0.69)},
    "off-centre (WM 1.0 s / 65 ms, GM 1.5 s / 85 ms)":
        {"csf": (3.6, 1.6, 0.95), "gm": (1.5, 0.085, 0.84), "wm": (1.0, 0.065, 0.66)},
}


class TissueCalibrated(torch.nn.Module):
    """W2Q as ``pinqi map`` runs it (:func:`pinqi.w2q.volume.map_volume`), called like :class:`pinqi.w2q.model.W2Q`.

    Samples that share protocol, sequence types and availability are treated as the slices of one
    volume (the pure-ROI test's 4 slices); the test set's samples, each with its own protocol, are
    mapped one by one. Slices of another size than the training grid (``image_size``) go through
    the network on that grid and are fitted at their own resolution, as in ``pinqi map``.
    ``calibrate``: the tissue calibration (the default of ``pinqi map``), else ``--calibrate
    none``. A given ``intensity_scale`` runs the bare network with it. ``field_of_view`` [mm]: the
    side of the square the slices span (the benchmarks' MNI152 slices: the template's 233 mm,
    padded to a square and resampled), so that a slice of side ``n`` has pixels of
    ``field_of_view / n`` mm (``pixel_size`` of :func:`~pinqi.w2q.volume.map_volume`; None: unknown).
    """

    def __init__(self, model: W2Q, image_size: int, calibrate: bool = True, field_of_view: float | None = 233.0) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.image_size = image_size
        self.calibrate = calibrate
        self.field_of_view = field_of_view

    def forward(self, images: torch.Tensor, sequence_params: torch.Tensor, sequence_types: torch.Tensor,
                brain_mask: torch.Tensor, available: torch.Tensor | None = None,
                intensity_scale: torch.Tensor | None = None) -> Any:
        if intensity_scale is not None:
            return self.model(images, sequence_params, sequence_types, brain_mask, available,
                              intensity_scale=intensity_scale)
        b = images.shape[0]
        av = torch.ones(b, images.shape[1], dtype=torch.bool) if available is None else available
        keys = [(tuple(sequence_params[i].flatten().tolist()), tuple(sequence_types[i].tolist()),
                 tuple(av[i].tolist())) for i in range(b)]
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        final = images.new_zeros(b, 3, *images.shape[2:])
        pixel = None if self.field_of_view is None else self.field_of_view / max(images.shape[-2:])
        for members in groups.values():
            i = torch.tensor(members)
            maps = map_volume(self.model, self.image_size, images[i].transpose(0, 1), brain_mask[i],
                              sequence_params[members[0]], sequence_types[members[0]], av[members[0]],
                              progress=False, calibrate=self.calibrate, pixel_size=pixel)
            final[i] = maps.transpose(0, 1).to(final)
        return SimpleNamespace(final=final)


def value_sets(methods: dict, protocols: Sequence[tuple], n_slices: int, size: int = 64,
               values: dict[str, dict[str, tuple[float, float, float]]] = OTHER_VALUES) -> dict[str, dict]:
    """``{f"{method}, {set}": summary}`` of :func:`benchmarks.w2q_clinical.run` for other tissue
    values, with the MAP from the exact tissue signals (:func:`ideal_calibration`) as the reference."""
    out = {}
    for label, vals in values.items():
        short = label.split(" (")[0]
        out[f"MAP from exact tissue signals, {short}"] = ideal_calibration(protocols, vals, n_slices, size,
                                                                           pure_pixels=False)["exact tissue signals"]
        for name, (model, _) in methods.items():
            result = clinical.run(model, n_slices, True, vals, protocols=protocols, size=size)
            if "summary" in result:
                out[f"{name}, {short}"] = result["summary"]
    return out


def _values_tensor(values: dict[str, tuple[float, float, float]]) -> torch.Tensor:
    """``(K, 3)`` (PD, T1, T2) in the order of :data:`CALIBRATION_CLASSES`."""
    return torch.tensor([[values[c][2], values[c][0], values[c][1]] for c in CALIBRATION_CLASSES], dtype=torch.float64)


def _roi_row(v: torch.Tensor) -> dict[str, float]:
    """ROI-mean keys of :func:`benchmarks.w2q_clinical.run` from tissue values ``(K, 3)``."""
    index = {c: i for i, c in enumerate(CALIBRATION_CLASSES)}
    return {f"{c} {n}": float(v[index[c], j]) for c in ("wm", "gm") for j, n in enumerate(("pd", "t1", "t2"))}


def _pure_medians(images: torch.Tensor, pure: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``(1, K, T)`` medians of ``images`` ``(S, T, Y, X)`` over the pure pixels ``pure`` ``(S, K, Y, X)``
    of all slices, for the tissues ``present`` ``(K,)`` (zeros for the others)."""
    pooled = images.permute(1, 0, 2, 3)  # (T, S, Y, X)
    return torch.stack([pooled[:, pure[:, k]].median(-1).values if bool(present[k])
                        else images.new_zeros(images.shape[1]) for k in range(pure.shape[1])])[None]


def ideal_calibration(protocols: Sequence[tuple], values: dict[str, tuple[float, float, float]], n_slices: int,
                      size: int = 64, seed: int = 0, pure_pixels: bool = True) -> dict[str, dict]:
    """Summaries (:func:`benchmarks.w2q_clinical.summarise`) over ``protocols`` of the MAP from the
    exact tissue signals and (``pure_pixels``) from the true pure pixels' medians."""
    v = _values_tensor(values)
    fr = clinical._fractions(n_slices, size)  # (S, 3, Y, X) csf, gm, wm = CALIBRATION_CLASSES
    pure = fr > 0.95
    present = pure.flatten(2).any(-1).any(0)[None]  # (1, K): tissues with a pure pixel in some slice
    every = torch.ones(1, 3, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    exact, pixels = [], []
    for entry in protocols:
        seq, types = clinical._protocol(entry)
        signal = MultiContrastSignal(seq[None], types[None])
        m = signal(v.T[None, :, :, None])[..., 0].transpose(1, 2)  # (1, K, T) noise-free tissue signals
        exact.append(_roi_row(solve_tissue_map(m, every, every, signal)[1][0]))
        if not pure_pixels:
            continue
        images = clinical._images(fr, values, entry, True, g)[0]  # (S, T, Y, X), one scale for the volume
        pixels.append(_roi_row(solve_tissue_map(_pure_medians(images, pure, present[0]), present, every, signal)[1][0]))
    truth = clinical.tissue_truth(values)
    out = {"exact tissue signals": clinical.summarise(exact, truth)}
    if pure_pixels:
        out["true pure pixels (fraction > 0.95)"] = clinical.summarise(pixels, truth)
    return out


def edge_summaries(methods: dict, protocols: Sequence[tuple], n_slices: int, size: int = 64,
                   edges: Sequence[tuple[str, int]] = (("lower edge", 0), ("upper edge", 1))) -> dict[str, dict]:
    """``{f"{method}, {edge}": summary}`` of :func:`benchmarks.w2q_clinical.run` at the prior's edges
    (``(name, 0 | 1)``: every tissue value at the lower or upper end of its prior range)."""
    out = {}
    for edge, which in edges:
        for name, (model, _) in methods.items():
            result = clinical.run(model, n_slices, True, clinical._edge(which), protocols=protocols, size=size)
            if "summary" in result:
                out[f"{name}, {edge}"] = result["summary"]
    return out


def slice_dependence(model: torch.nn.Module, n_slices: int = 12, size: int = 64, entry: tuple | None = None,
                     seed: int = 0) -> list[tuple[int, int, float, float]]:
    """``(slice, pure WM pixels, W2Q's mean T1 there [s], the MAP's WM T1 [s])`` per MNI152 test slice,
    one protocol (default: the first clinical one), literature values, one scale for the volume. The
    MAP (:func:`solve_tissue_map`) is told that slice's medians over its true pure pixels of every
    tissue with at least 3 of them."""
    entry = clinical.PROTOCOLS[0] if entry is None else entry
    model = copy.deepcopy(model).double()
    fr = clinical._fractions(n_slices, size)
    mask = fr.sum(1) >= 0.5
    images, seq, types, _ = clinical._images(fr, clinical.LITERATURE, entry, True, torch.Generator().manual_seed(seed))
    b = images.shape[0]
    with torch.no_grad():
        p = model(images, seq.expand(b, 3, 6), types.expand(b, 3), mask).final
    signal = MultiContrastSignal(seq[None], types[None])
    pure = fr > 0.95
    wm = CALIBRATION_CLASSES.index("wm")
    rows = []
    for i in range(b):
        if not bool(pure[i, wm].any()):
            continue
        present = (pure[i].flatten(1).sum(-1) >= 3)[None]
        medians = _pure_medians(images[i : i + 1], pure[i : i + 1], present[0])
        ideal = solve_tissue_map(medians, present, torch.ones(1, 3, dtype=torch.bool), signal)[1][0, wm, 1]
        rows.append((i, int(pure[i, wm].sum()), float(p[i, 1][pure[i, wm]].mean()), float(ideal)))
    return rows


def generator_bias(model: Callable[..., Any], config: Any, n_samples: int = 48, seed: int = 5) -> dict[str, float]:
    """W2Q's pure-WM T1 error [%] on ``n_samples`` slices of its own training generator (MNI152 test slab,
    held-out protocols, every tissue at the literature values of :data:`benchmarks.w2q_clinical.LITERATURE`):
    the mean of the per-slice errors (each slice counts once) and the pixel-weighted one (as a pooled ROI)."""
    ranges = dict(W2Q_TISSUE_PRIOR)
    for c, (t1, t2, pd) in clinical.LITERATURE.items():
        ranges[c] = TissueRange(t1=(t1, t1 * (1 + 1e-6)), t2=(t2, t2 * (1 + 1e-6)), pd=(pd, pd * (1 + 1e-6)))
    settings = {**data_settings(config.data_version), "tissue_ranges": ranges}
    data = BandedProtocolDataset(load_anatomy("mni152", "test"), length=n_samples, seed=seed, image_size=config.image_size,
                                 held_out=config.held_out, part="held_out", **settings)
    errors, pixels = [], []
    with torch.no_grad():
        for i in range(n_samples):
            s = data[i]
            pure = s["fractions"][BRAIN_CLASSES.index("wm")] > 0.95
            if int(pure.sum()) < 5:
                continue
            p = model(s["images"][None], s["sequence_params"][None], s["sequence_types"][None], s["brain_mask"][None]).final
            errors.append(float(p[0, 1][pure].mean() / s["params"][1][pure].mean() - 1))
            pixels.append(int(pure.sum()))
    e, n = torch.tensor(errors), torch.tensor(pixels, dtype=torch.float64)
    return {"slices": len(errors), "per-slice mean %": 100 * float(e.mean()),
            "pixel-weighted %": 100 * float((e * n).sum() / n.sum())}


def summary_table(summaries: dict[str, dict]) -> list[str]:
    """Markdown: per row, the error of the mean and (in brackets) the worst protocol [%] of each ROI
    map and of the GM/WM PD ratio, and the largest CV across protocols [%]."""
    header = "| | " + " | ".join(k.upper() for k in ROI_COLUMNS) + " | GM/WM PD | largest CV |"
    lines = [header, "|---" * (len(ROI_COLUMNS) + 3) + "|"]
    for name, s in summaries.items():
        cells = [f"{s[k]['error %']:+.1f} ({s[k]['worst error %']:.1f})" for k in ROI_COLUMNS]
        r = s["gm/wm pd"]
        cv = max(s[k]["cv %"] for k in ROI_COLUMNS)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['error %']:+.1f} ({r['worst error %']:.1f}) | {cv:.2f} |")
    return lines


def calibration_report(ideal: dict[str, dict], edges: dict[str, dict], slices: list[tuple[int, int, float, float]],
                       generator: dict[str, float] | None = None, others: dict[str, dict] | None = None) -> list[str]:
    """Markdown section of part 3."""
    lines = ["## Where the tissue-value errors come from", "",
             "See `benchmarks/w2q_calibration.py`. Cells: error of the mean across protocols [%] (worst protocol "
             "in brackets), on the protocols of the pure-ROI test.", "",
             "### What the prior leaves: the tissue-calibration MAP told the tissue signals", "",
             "`solve_tissue_map` (literature prior, scales unknown) from the exact pure-tissue "
             "signals, and from the images' medians over the true pure pixels (fraction > 0.95); the W2Q rows "
             "from the pure-ROI test above:", ""]
    lines += summary_table(ideal) + [""]
    lines += ["### At the edges of the prior (every WM, GM and CSF value at its lower, then upper edge)", "",
              "The MAP from the exact tissue signals is a Bayesian reference: what this prior makes of the "
              "pure-tissue signals themselves; W2Q and W2Q + tissue calibration next to it:", ""]
    lines += summary_table(edges) + [""]
    if others:
        lines += ["### Other tissue values and another slice set", "",
                  "Away from the literature set the prior pulls the calibration too; the MAP from the exact tissue "
                  "signals is the reference for any calibration from pure-tissue signals (values: "
                  + "; ".join(OTHER_VALUES) + "). The last rows: literature values over three times as many "
                  "MNI152 test slices.", ""]
        lines += summary_table(others) + [""]
    if slices:
        truth = clinical.LITERATURE["wm"][0]
        lines += ["### W2Q's pure-WM T1 per slice", "",
                  f"First clinical protocol, {len(slices)} MNI152 test slices with pure WM, truth {truth} s. Each slice "
                  "is calibrated on its own; slices that are mostly white matter read it high, slices with little "
                  "white matter low, and the pixel-pooled ROI mean follows the white-matter-rich slices.", "",
                  "The last columns: the MAP told this slice's own pure-pixel medians (in a slice whose only pure "
                  "tissue is white matter this is the prior's value: one tissue alone carries no calibration).", "",
                  "| slice | pure WM pixels | W2Q WM T1 [s] | error [%] | MAP WM T1 [s] | error [%] |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {i} | {n} | {t1:.3f} | {100 * (t1 / truth - 1):+.1f} | {m:.3f} | {100 * (m / truth - 1):+.1f} |"
                  for i, n, t1, m in slices]
        lines.append("")
    if generator:
        lines += [f"In W2Q's own training generator ({generator['slices']} held-out slices of the test slab, every tissue "
                  f"at the literature values): pure-WM T1 error {generator['per-slice mean %']:+.1f} % as the mean of "
                  f"the per-slice errors, {generator['pixel-weighted %']:+.1f} % pixel-weighted (`generator_bias`).", ""]
    return lines
