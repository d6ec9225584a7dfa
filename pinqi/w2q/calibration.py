"""Physics calibration of W2Q's unknown per-contrast intensity scales from the tissues it segments.

Each weighted image is known only up to a global scale ``a_c`` per contrast. Three contrasts
(T1w, T2w, FLAIR) of a brain of CSF, GM and WM carry 9 pure-tissue signals ``m_kc`` for 9 tissue
values ``v_k`` = (PD, T1, T2) and 3 scales: three unknowns more than observations (PD and a
common scale are interchangeable, and two more directions trade the scales against the tissue
values). Only prior knowledge of tissue values fixes the rest. W2Q's network does this
implicitly, slice by slice, and its answer depends on what the slice holds
(``benchmarks/results/w2q.md``, part 3). This module does it explicitly, once per volume:

1. **Segment** (:func:`segment_tissues`): unmix each pixel's relaxation rates (1/T1, 1/T2) of the
   network's maps (fitted to the images at their own resolution) into weights of CSF, GM and WM
   (:func:`unmix_tissues`, one set of tissue points for all slices of the volume); a pixel is
   *pure* when its weight exceeds 0.9 and so do those of its 8 neighbours (erosion keeps sulcal
   CSF and GM/WM borders out), and no weight is an extrapolation far beyond the tissue's point
   (fat in a loose mask, :data:`pinqi.w2q.segmentation.EXTRAPOLATION`).
2. **Calibrate** (:func:`calibrate_tissues`): the tissues' signals in every contrast (CSF and WM:
   the medians over their pure pixels of the whole volume; GM, which has almost no pure pixels
   at 1 mm: the corner of the volume's partial-volume triangle,
   :func:`pinqi.w2q.partial_volume.grey_matter_signal`, in the contrasts where CSF is dark,
   :data:`CORNER_CSF_RATIO`; in a T2w of a clinical echo time from the GM pixels with their CSF
   and WM removed, :data:`UNMIX_CSF_RATIO`), and the MAP (:func:`solve_tissue_map`) of
   the scales and tissue values under the log-normal match of :data:`CALIBRATION_PRIOR`
   (literature 3 T values, sources in :mod:`simulation.tissues`, with CSF as the water reference
   of PD). No calibration (None) when the volume has fewer than ``min_pixels`` pure CSF or WM
   pixels; without a GM corner, grey matter is left to the network.
3. **Re-centre** (:func:`tissue_shift`): move the maps so that each calibrated class's level in
   them (the median over its pure pixels; with the GM corner, GM's and WM's over the pixels they
   dominate) takes its calibrated value: a per-parameter offset in log space, a piecewise-linear
   function of the pixel's ln T1 through the classes' levels of ln T1, constant beyond the ends
   (an uncalibrated class keeps the network's level, zero offset, held on a plateau from half-way
   to each neighbour).

Between steps 2 and 3 the network and its fit run again, told the calibrated scales as known
intensities (``intensity_scale`` of :meth:`pinqi.w2q.model.W2Q.forward`); the maps barely move.
:func:`pinqi.w2q.volume.map_volume` (``pinqi map``, ``--calibrate tissue``, the default) runs it
all over a whole volume at its own resolution: segmentation and calibration on the maps fitted
to the native images.

What it achieves (``python -m benchmarks.w2q``, pure-ROI test, 14 held-out and clinical
protocols, 4 MNI152 test slices on the training grid and at 1 mm): see
``benchmarks/results/w2q.md``. Like any method that fixes the scales with a prior, it reads tissue
values near the prior's centre accurately and is pulled towards the centre at its edges (there it
follows the MAP from the exact tissue signals, the Bayesian reference, and can be worse than the
network alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from simulation.tissues import W2Q_TISSUE_PRIOR, TissueRange

from .partial_volume import grey_matter_signal, grey_matter_unmixed
from .segmentation import CALIBRATION_CLASSES, log_prior, segment_tissues, unmix_tissues

__all__ = ["CALIBRATION_CLASSES", "CALIBRATION_PRIOR", "CORNER_CSF_RATIO", "UNMIX_CSF_RATIO", "GREY_MATTER_MAX_PIXEL",
           "NODE_FROM_PURE", "TissueCalibration", "TissueShift", "unmix_tissues", "segment_tissues", "solve_tissue_map",
           "calibrate_tissues", "tissue_shift"]

#: The classes calibrated from the medians over their pure pixels (grey matter: from its corner, see
#: :func:`calibrate_tissues`).
CALIBRATED: tuple[str, ...] = ("csf", "wm")

#: The classes whose level in the maps (the node of :func:`tissue_shift`) is taken over their pure
#: pixels: most of the pixels CSF dominates are sulci shared with grey matter.
NODE_FROM_PURE: tuple[str, ...] = ("csf",)
#: In-plane pixel size [mm] up to which grey matter enters the calibration through its corner
#: (:func:`pinqi.w2q.partial_volume.grey_matter_signal`): it needs pixels on both of the corner's
#: edges, so a cortex (2–3 mm thick) resolved by its pixels. MNI152, textbook signals, shipped W2Q
#: weights: GM T1 +1.8 % at 1.8 mm pixels, −12 % at 3.6 mm (the corner's T2w signal +16 %).
GREY_MATTER_MAX_PIXEL: float = 2.0

#: The grey-matter corner is placed in the contrasts where pure CSF is at most this many times as
#: bright as pure WM (when at least two are; else in all available ones), and grey matter enters
#: the MAP with those contrasts (and those of :data:`UNMIX_CSF_RATIO`). Nearly every cortical
#: pixel holds some CSF (sulci, perivascular spaces; the MNI152 template: ≥ 0.1 %, median 2 %, in
#: its > 95 % GM pixels), which moves a pixel off the triangle's no-CSF edge by its CSF fraction
#: times the CSF signal: little where CSF is dark (T1w: 0.2–0.5 × WM; FLAIR: 0.05–1.8 × WM on the
#: 14 protocols of ``benchmarks.w2q``), by up to 200 times as much where it is bright (T2w: 3–200
#: × WM). MAP with the shipped weights, MNI152 at 1 mm, those protocols: GM T1 CV across protocols
#: 0.39 % (error +2.6 %) with the corner in T1w and FLAIR (and GM's T2w unmixed,
#: :data:`UNMIX_CSF_RATIO`), 0.82 % (+3.3 %) with the corner in all three.
CORNER_CSF_RATIO: float = 2.0
#: In the other contrasts where pure CSF is at most this many times as bright as pure WM, grey
#: matter's signal is unmixed (:func:`pinqi.w2q.partial_volume.grey_matter_unmixed`: each GM
#: pixel's CSF and WM removed, with its fractions from the corner's contrasts) and enters the MAP
#: too. An error ``δ`` in a pixel's unmixed CSF fraction moves it by ``δ`` times the CSF signal, so
#: this keeps the T2w of clinical echo times (CSF 3–5 × WM on the protocols of ``benchmarks.w2q``)
#: and leaves out long ones (16–200 × WM). Without it grey matter's T2 follows the prior: at the
#: prior's upper T2 edge (Wansapura-like values, 1 mm, 6 clinical protocols) GM T1 −1.9 % (worst
#: 7.3 %) and GM/WM PD −3.1 % (worst 4.0 %) instead of +0.3 % (3.9 %) and −0.9 % (1.3 %).
UNMIX_CSF_RATIO: float = 10.0

#: The calibration's prior: :data:`simulation.tissues.W2Q_TISSUE_PRIOR` with the PD of CSF at
#: 0.98–1.0. PD is relative to water, and CSF is nearly pure water (≈ 99 %); water-content maps
#: are commonly normalised to ventricular CSF (e.g. Mezer et al., Nat Med 19:1667, 2013). The
#: calibration fixes the images' common scale through CSF, so its PD sets the level of every PD
#: and, through the ratios of the tissue signals, of WM T1: in the MAP from exact tissue signals
#: (literature values, CSF PD 1; 14 held-out and clinical protocols) WM T1 reads +3.2 % (worst
#: 3.5 %) with the training prior's CSF PD (0.94–1.0) and +1.8 % (worst 2.0 %) with this one.
#: The training data keep the wider range.
CALIBRATION_PRIOR: dict[str, TissueRange] = {**W2Q_TISSUE_PRIOR, "csf": replace(W2Q_TISSUE_PRIOR["csf"], pd=(0.98, 1.0))}


def solve_tissue_map(
    signals: torch.Tensor,
    present: torch.Tensor,
    available: torch.Tensor,
    signal: Callable[[torch.Tensor], torch.Tensor],
    prior: dict[str, TissueRange] = CALIBRATION_PRIOR,
    names: Sequence[str] = CALIBRATION_CLASSES,
    noise: float = 0.01,
    contamination: float = 0.02,
    shared: bool = False,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAP scales and tissue values from tissue signals (step 3 of the module docstring); no gradient.

    Parameters
    ----------
    signals
        ``(B, K, T)`` tissue signals ``m_kc`` (any positive units).
    present
        ``(B, K)`` bool: tissues whose signals count (the others follow the prior); or ``(B, K, T)``:
        which of each tissue's signals count.
    available
        ``(B, T)`` bool: contrasts whose signals count.
    signal
        ``q``: ``(B, 3, Y, X) -> (B, T, Y, X)``, the per-contrast signal models of the protocol.
    prior, names, noise, contamination, shared, max_iter
        ``prior`` uniform tissue ranges whose log-normal match is the prior; ``names`` the tissues
        (keys of ``prior``); ``noise`` and ``contamination`` the tolerance of a tissue signal (module
        docstring); ``shared`` one problem for all samples (their rows must then be alike);
        ``max_iter`` L-BFGS iterations.

    Returns
    -------
    scales : ``(B, T)`` float64, ``signals ≈ scales · q(values)``.
    values : ``(B, K, 3)`` float64 (PD, T1 [s], T2 [s]).
    """
    if signals.ndim != 3:
        raise ValueError(f"signals must have shape (B, K, T); got {tuple(signals.shape)}")
    b, k, t = signals.shape
    if present.shape not in ((b, k), (b, k, t)) or available.shape != (b, t):
        raise ValueError(f"present must be (B, K) = {(b, k)} or (B, K, T) = {(b, k, t)} and available (B, T) = "
                         f"{(b, t)}; got {tuple(present.shape)} and {tuple(available.shape)}")
    if len(names) != k:
        raise ValueError(f"names must name the K = {k} tissues; got {list(names)}")
    if not noise > 0 or contamination < 0:
        raise ValueError(f"need noise > 0 and contamination >= 0; got {noise}, {contamination}")
    dtype, device = torch.float64, signals.device
    mean, std = log_prior(names, prior, dtype, device)
    signals = signals.detach().to(dtype)
    with torch.no_grad():
        present = present if present.ndim == 3 else present[:, :, None]
        use = (present & available[:, None, :]).to(dtype)  # (B, K, T)
        level = (signals.abs() * use).sum(1) / use.sum(1).clamp_min(1)  # (B, T)
        level = torch.where(level > 0, level, torch.ones_like(level))
        # a "pure" pixel may hide a share `contamination` of the brightest other tissue
        others = torch.stack([(signals.abs() * use).index_fill(1, torch.tensor([j], device=device), 0).amax(1)
                              for j in range(k)], 1)  # (B, K, T)
        sigma = torch.sqrt((noise * level[:, None, :]) ** 2 + (contamination * others) ** 2)

    def tissue_signals(log_v: torch.Tensor) -> torch.Tensor:  # (B, K, 3) -> (B, K, T)
        maps = log_v.exp().permute(0, 2, 1)[..., None]  # (B, 3, K, 1)
        return signal(maps).to(dtype)[..., 0].permute(0, 2, 1)

    groups = 1 if shared else b  # independent problems: one per sample, or one for the volume
    with torch.enable_grad():
        with torch.no_grad():
            q0 = tissue_signals(mean.expand(b, k, 3))
            ratio = torch.where((use > 0) & (q0 > 0) & (signals > 0), signals / q0.clamp_min(1e-12), torch.nan)
            a0 = torch.nanmedian(ratio, dim=1).values[:groups]
            a0 = torch.where(torch.isfinite(a0) & (a0 > 0), a0, torch.ones_like(a0))
        log_v = mean.expand(groups, k, 3).clone().requires_grad_(True)
        log_a = a0.log().clone().requires_grad_(True)
        optimiser = torch.optim.LBFGS([log_v, log_a], max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            model = log_a.exp().expand(b, t)[:, None, :] * tissue_signals(log_v.expand(b, k, 3))
            residual = use * (model - signals) / sigma
            loss = 0.5 * residual.square().sum() * groups / b + 0.5 * ((log_v - mean) / std).square().sum()
            loss.backward()
            return loss

        optimiser.step(closure)
    return log_a.detach().exp().expand(b, t).clone(), log_v.detach().exp().expand(b, k, 3).clone()


@dataclass
class TissueCalibration:
    """What :func:`calibrate_tissues` returns (``K`` = 3 classes of :data:`CALIBRATION_CLASSES`, ``T`` contrasts).

    Attributes
    ----------
    scales
        ``(T,)`` the images' scales ``a_c`` (images ≈ ``a_c · q_c(PD, T1, T2)``, in the images' units);
        for an unavailable contrast its initial guess (no data constrain it).
    values
        ``(K, 3)`` MAP tissue values (PD, T1 [s], T2 [s]); those of the classes not in ``calibrated``
        are the prior's pull only and are not used.
    signals
        ``(K, T)`` the tissues' signals: medians over the pure pixels, grey matter's the corner of
        :func:`pinqi.w2q.partial_volume.grey_matter_signal` or unmixed
        (:func:`~pinqi.w2q.partial_volume.grey_matter_unmixed`); zero for classes and contrasts not used.
    pixels
        ``(K,)`` number of pure pixels per class in the volume.
    calibrated
        The classes whose signals entered the MAP.
    present
        ``(K, T)`` bool, the signals that entered the MAP (grey matter: those of
        :data:`CORNER_CSF_RATIO` and :data:`UNMIX_CSF_RATIO`); None: those of the classes in
        ``calibrated``, all contrasts.
    """

    scales: torch.Tensor
    values: torch.Tensor
    signals: torch.Tensor
    pixels: torch.Tensor
    calibrated: tuple[str, ...] = CALIBRATED
    present: torch.Tensor | None = None


def calibrate_tissues(
    images: torch.Tensor,
    pure: torch.Tensor,
    signal: Callable[[torch.Tensor], torch.Tensor],
    available: torch.Tensor | None = None,
    min_pixels: int = 8,
    calibrated: Sequence[str] = CALIBRATED,
    prior: dict[str, TissueRange] = CALIBRATION_PRIOR,
    weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> TissueCalibration | None:
    """Scales and tissue values of one volume from its pure tissues (step 2 of the module docstring).

    Parameters
    ----------
    images
        ``(S, T, Y, X)`` magnitude images of the ``S`` slices of one volume (one scale per contrast).
    pure
        ``(S, K, Y, X)`` bool pure pixels (:func:`segment_tissues`).
    signal
        ``q``: ``(1, 3, Y, X) -> (1, T, Y, X)``, the per-contrast signal models of the protocol.
    available
        ``(T,)`` bool, default all True: contrasts without data do not enter the MAP.
    min_pixels
        Each class in ``calibrated`` needs at least this many pure pixels, else None is returned.
    calibrated
        The classes whose median signals enter the MAP.
    prior
        Uniform tissue ranges whose log-normal match is the MAP's prior.
    weights, mask
        ``(S, K, Y, X)`` tissue weights (:func:`segment_tissues`) and ``(S, Y, X)`` brain mask: with
        both, grey matter (unless in ``calibrated``) enters too, with the GM corner of the volume's
        partial-volume triangle (:func:`pinqi.w2q.partial_volume.grey_matter_signal`) as its signal,
        where that corner can be placed: in the contrasts of :data:`CORNER_CSF_RATIO`, and
        unmixed in those of :data:`UNMIX_CSF_RATIO`.

    Returns
    -------
    :class:`TissueCalibration` (float64), or None when a class of ``calibrated`` has too few pure pixels.
    """
    if images.ndim != 4 or pure.ndim != 4 or pure.shape[0] != images.shape[0] or pure.shape[2:] != images.shape[2:] \
            or pure.shape[1] != len(CALIBRATION_CLASSES):
        raise ValueError(f"images must be (S, T, Y, X) and pure (S, {len(CALIBRATION_CLASSES)}, Y, X) on the same grid; "
                         f"got {tuple(images.shape)} and {tuple(pure.shape)}")
    unknown = [c for c in calibrated if c not in CALIBRATION_CLASSES]
    if unknown or not calibrated:
        raise ValueError(f"calibrated must name some of {CALIBRATION_CLASSES}; got {list(calibrated)}")
    t = images.shape[1]
    available = torch.ones(t, dtype=torch.bool) if available is None else available.to(torch.bool).reshape(-1).cpu()
    if available.shape != (t,) or not bool(available.any()):
        raise ValueError(f"available must be (T,) = ({t},) bool with at least one True; got {tuple(available.shape)}")
    pixels = pure.flatten(2).sum(-1).sum(0)  # (K,)
    use = torch.tensor([c in calibrated for c in CALIBRATION_CLASSES])
    if bool((pixels[use] < min_pixels).any()):
        return None
    pooled = images.detach().to(torch.float64).transpose(0, 1)  # (T, S, Y, X)
    signals = torch.stack([pooled[:, pure[:, k]].median(-1).values if bool(use[k]) else pooled.new_zeros(t)
                           for k in range(len(CALIBRATION_CLASSES))])  # (K, T)
    gm, csf, wm = (CALIBRATION_CLASSES.index(c) for c in ("gm", "csf", "wm"))
    if (weights is None) != (mask is None):
        raise ValueError("give both weights and mask (the grey-matter corner), or neither")
    present = use[:, None] & available[None, :]  # (K, T)
    if weights is not None and mask is not None and not bool(use[gm]) and bool(use[csf]) and bool(use[wm]):
        dark = available & (signals[csf] <= CORNER_CSF_RATIO * signals[wm]).cpu()
        where = dark if int(dark.sum()) >= 2 else available
        corner = grey_matter_signal(images, weights, mask, signals[csf], signals[wm], where)
        if corner is not None:
            signals[gm], use[gm], present[gm] = corner, True, where
            unmix = available & ~where & (signals[csf] <= UNMIX_CSF_RATIO * signals[wm]).cpu()
            whole = grey_matter_unmixed(images, weights, mask, signals, where, where | unmix) \
                if bool(unmix.any()) else None
            if whole is not None:
                signals[gm], present[gm] = whole, where | unmix
    scales, values = solve_tissue_map(signals[None], present[None], available[None], signal, prior)
    return TissueCalibration(scales=scales[0], values=values[0], signals=signals, pixels=pixels,
                             calibrated=tuple(c for c, u in zip(CALIBRATION_CLASSES, use.tolist()) if u),
                             present=present)


@dataclass
class TissueShift:
    """The re-centring of :func:`tissue_shift`: a function of each pixel's ln T1.

    Attributes
    ----------
    nodes
        ``(N,)`` ascending ln T1 [ln s] of the nodes.
    offsets
        ``(N, 3)`` the offsets of ln (PD, T1, T2) at the nodes (linear in between, constant beyond).
    """

    nodes: torch.Tensor
    offsets: torch.Tensor

    def log_offset(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, 3, Y, X)`` offsets of ln (PD, T1, T2) for maps ``(B, 3, Y, X)``."""
        s = maps[:, 1].clamp_min(1e-6).log()
        nodes, offsets = self.nodes.to(s), self.offsets.to(s)
        shift = offsets[0][None, :, None, None].expand(maps.shape[0], 3, *s.shape[1:])
        for n in range(len(nodes) - 1):
            w = ((s - nodes[n]) / (nodes[n + 1] - nodes[n]).clamp_min(1e-9)).clamp(0, 1)
            shift = shift + w[:, None] * (offsets[n + 1] - offsets[n])[None, :, None, None]
        return shift

    def __call__(self, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Re-centred maps ``(B, 3, Y, X)`` (PD, T1 [s], T2 [s]); pixels outside ``mask`` ``(B, Y, X)``
        unchanged. Differentiable in ``maps``."""
        inside = mask.to(torch.bool)[:, None]
        return torch.where(inside, maps * self.log_offset(maps).exp(), maps)


def tissue_shift(maps: torch.Tensor, weights: torch.Tensor, pure: torch.Tensor, calibration: TissueCalibration,
                 mask: torch.Tensor, min_pixels: int = 8, plateau: float = 0.5, node_weight: float | None = None,
                 prior: dict[str, TissueRange] = CALIBRATION_PRIOR) -> TissueShift:
    """The re-centring that moves ``maps`` to the calibrated tissue values (step 3 of the module docstring).

    Parameters
    ----------
    maps
        ``(S, 3, Y, X)`` the maps to re-centre (PD, T1 [s], T2 [s]), all slices of the volume.
    weights, pure
        ``(S, K, Y, X)`` tissue weights and pure pixels from :func:`segment_tissues`.
    calibration
        From :func:`calibrate_tissues`.
    mask
        ``(S, Y, X)`` brain mask.
    min_pixels
        Fewest pixels that place a class's node.
    plateau
        An uncalibrated class's zero offset holds from this fraction of the way to each
        neighbouring node; between two calibrated classes each offset holds over half of it (the
        pixels around a class's level move together, and CSF's offset, often large, does not
        reach grey matter); 0: a plain linear interpolation between the nodes.
    node_weight
        None: each class's node is taken over its pure pixels (where it has fewer than
        ``min_pixels``: over those where it has the largest weight, above 0.5). A number: over the
        pixels where it has the largest weight, above this (except the classes of
        :data:`NODE_FROM_PURE`). :func:`pinqi.w2q.volume.map_volume` uses 0.5 with the grey-matter
        corner (pixels of at most :data:`GREY_MATTER_MAX_PIXEL`): there most of the pixels a class
        dominates are nearly pure, while its pure (eroded) pixels are the interior, which the
        network's maps read a few % apart from the pixels near a border (1 mm MNI152: the WM pure
        median 4.7 % below the median over the pixels WM dominates, the mean over the pixels of
        > 95 % WM in between). With coarser pixels most of the pixels a class dominates are partial
        volumes (3.6 mm: WM T1 30 % off).

    Returns
    -------
    :class:`TissueShift`; its nodes: each class's level in the maps, the median of ln (PD, T1, T2)
    over the pixels of ``node_weight``; an uncalibrated class without such pixels sits at its prior
    centre.
    """
    if not 0 <= plateau < 1:
        raise ValueError(f"plateau must be in [0, 1); got {plateau}")
    logs = maps.detach().to(torch.float64).clamp_min(1e-6).log().transpose(0, 1)  # (3, S, Y, X)
    mask = mask.to(torch.bool)
    centre_prior, _ = log_prior(CALIBRATION_CLASSES, prior, torch.float64, maps.device)
    nodes, offsets, fixed = [], [], []
    for k, name in enumerate(CALIBRATION_CLASSES):
        calibrated = name in calibration.calibrated
        if (node_weight is None or name in NODE_FROM_PURE) and int(pure[:, k].sum()) >= min_pixels:
            sel = pure[:, k]
        else:
            sel = (weights.argmax(1) == k) & (weights[:, k] > (0.5 if node_weight is None else node_weight)) & mask
        if int(sel.sum()) >= min_pixels:
            centre = logs[:, sel].median(-1).values
        elif calibrated:
            continue  # no pixel of the class in the maps: its calibration has nothing to move
        else:
            centre = centre_prior[k]
        nodes.append(centre[1])
        fixed.append(calibrated)
        offsets.append(calibration.values[k].log().to(centre) - centre if calibrated else torch.zeros_like(centre))
    order = torch.argsort(torch.stack(nodes))
    x, d = [nodes[i] for i in order], [offsets[i] for i in order]
    free = [not fixed[i] for i in order]  # the uncalibrated classes keep their level (zero offset)
    xs, ds = [x[0]], [d[0]]
    for n in range(1, len(x)):
        step = x[n] - x[n - 1]
        if plateau > 0 and free[n] and not free[n - 1]:
            xs.append(x[n - 1] + (1 - plateau) * step)
            ds.append(d[n])
        elif plateau > 0 and free[n - 1] and not free[n]:
            xs.append(x[n - 1] + plateau * step)
            ds.append(d[n - 1])
        elif plateau > 0 and not free[n - 1] and not free[n]:  # two calibrated classes: each holds half as far
            xs += [x[n - 1] + plateau / 2 * step, x[n] - plateau / 2 * step]
            ds += [d[n - 1], d[n]]
        xs.append(x[n])
        ds.append(d[n])
    return TissueShift(nodes=torch.stack(xs), offsets=torch.stack(ds))
