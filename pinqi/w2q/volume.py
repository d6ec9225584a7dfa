"""W2Q over a whole volume of any in-plane size: the slices through the network on its training grid,
the intensity calibration over the volume, a fit at the native resolution (used by ``pinqi map``)."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .calibration import GREY_MATTER_MAX_PIXEL, calibrate_tissues, tissue_shift
from .model import W2Q
from .segmentation import segment_tissues
from .signal import MultiContrastSignal

__all__ = ["map_volume"]

log = logging.getLogger("pinqi")


def _to_grid(x: torch.Tensor, size: int, mode: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Zero-pad ``(B, C, Y, X)`` to a square and resample to ``size``; returns the info to undo it."""
    ny, nx = x.shape[-2:]
    n = max(ny, nx)
    x = F.pad(x, (0, n - nx, 0, n - ny))
    if n != size:
        # antialiased when shrinking: a plain bilinear sample would pass the native noise and alias the anatomy
        x = F.interpolate(x, size=(size, size), mode=mode,
                          **({"align_corners": False, "antialias": n > size} if mode == "bilinear" else {}))
    return x, (ny, nx, n)


def _from_grid(x: torch.Tensor, info: tuple[int, int, int]) -> torch.Tensor:
    ny, nx, n = info
    if x.shape[-1] != n:
        x = F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False)
    return x[..., :ny, :nx]


def map_volume(model: W2Q, image_size: int, volumes: torch.Tensor, mask: torch.Tensor, protocols: torch.Tensor,
               types: torch.Tensor, available: torch.Tensor, batch_size: int = 8, progress: bool = True,
               return_std: bool = False, calibrate: bool = True, pixel_size: float | None = None) -> Any:
    """W2Q maps of one volume at its own resolution (what ``pinqi map`` writes).

    The slices go through the network on its training grid (zero-padded to a square, resampled
    with antialiasing when larger), the maps are fitted to the images at the native resolution
    (:meth:`pinqi.w2q.model.W2Q.refit`, skipped when the slices already are on the training grid
    and no ``std`` is asked for). With ``calibrate``, the tissue calibration of
    :mod:`pinqi.w2q.calibration` follows, at the native resolution and over the whole volume:
    segment these maps (one set of tissue points), the MAP of the scales from the pure CSF and WM
    pixels (and the grey-matter corner, when ``pixel_size`` is known and at most
    :data:`~pinqi.w2q.calibration.GREY_MATTER_MAX_PIXEL`), a second pass of network and fit told
    those scales, and the re-centring (:func:`~pinqi.w2q.calibration.tissue_shift`). With fewer
    than 8 pure CSF or WM pixels it warns and keeps the first pass (the network's own calibration).

    Parameters
    ----------
    model
        A W2Q model with a fit layer; ``image_size`` its training grid side [pixels].
    volumes
        ``(3, Z, Y, X)`` RAS-ordered slices of T1w, T2w, FLAIR (zeros for a missing contrast).
    mask
        ``(Z, Y, X)`` bool brain mask; slices without mask pixels are left at zero.
    protocols, types, available
        ``(3, 6)`` (or ``(3, 4)``) sequence parameters, ``(3,)`` sequence-type ids, ``(3,)`` bool.
    batch_size, progress
        Slices per network call; a progress bar.
    return_std, calibrate
        Also return the maps' standard deviations and the calibration; the tissue calibration.
    pixel_size
        The slices' in-plane pixel size [mm] (the larger side), if known.

    Returns
    -------
    maps : ``(3, Z, Y, X)`` float32 (PD, T1 [s], T2 [s]); with ``return_std`` also
    std : ``(3, Z, Y, X)`` (re-scaled with the maps by the re-centring) and the
    :class:`~pinqi.w2q.calibration.TissueCalibration` (None when not calibrated).
    """
    nf = protocols.shape[-1]
    todo = [z for z in range(volumes.shape[1]) if bool(mask[z].any())]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]

    native = tuple(volumes.shape[-2:]) == (image_size, image_size)

    def grid(zs: list[int]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
        small, info = _to_grid(volumes[:, zs].transpose(0, 1).contiguous(), image_size, "bilinear")
        return small, _to_grid(mask[zs][:, None].float(), image_size, "bilinear")[0][:, 0] > 0.5, info

    grids = [grid(zs) for zs in batches]  # resampled once, for both passes

    def network_maps(scales: torch.Tensor | None, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on the training grid, then the fit at the native resolution, for all slices."""
        out, std = torch.zeros(3, *volumes.shape[1:]), torch.zeros(3, *volumes.shape[1:])
        for zs, (small, small_mask, info) in tqdm(list(zip(batches, grids)), desc=desc, disable=not progress,
                                                  unit="batch"):
            b = len(zs)
            imgs, msk = volumes[:, zs].transpose(0, 1).contiguous(), mask[zs]
            seq, typ, av = protocols.expand(b, 3, nf), types.expand(b, 3), available.expand(b, 3)
            known = None if scales is None else scales.expand(b, 3)
            with torch.no_grad():
                p = model(small, seq, typ, small_mask, av, intensity_scale=known).final
                if not native or return_std:
                    p, s = model.refit(imgs, seq, typ, msk, p if native else _from_grid(p, info), av,
                                       return_std=True, intensity_scale=known)
                    std[:, zs] = (s * msk[:, None]).transpose(0, 1).to(std)
            out[:, zs] = (p * msk[:, None]).transpose(0, 1).to(out)
        return out, std

    out, std = network_maps(None, "W2Q")
    calibration = None
    if calibrate and todo:
        inside = mask[todo].to(torch.bool)
        with torch.no_grad():
            weights, pure = segment_tissues(out[:, todo].transpose(0, 1), inside)
            signal = MultiContrastSignal(protocols[None].to(torch.float64), types[None])
            grey = pixel_size is not None and pixel_size <= GREY_MATTER_MAX_PIXEL
            calibration = calibrate_tissues(volumes[:, todo].transpose(0, 1), pure, signal, available,
                                            weights=weights if grey else None, mask=inside if grey else None)
        if calibration is None:
            log.warning("tissue calibration skipped: fewer than 8 pure CSF or pure WM pixels in the volume; the maps "
                        "carry the network's own intensity calibration (see pinqi.w2q.calibration)")
        else:
            v = calibration.values
            log.info("tissue calibration from %d pure CSF and %d pure WM pixels%s: WM T1 %.3f s, T2 %.1f ms, PD %.2f; "
                     "%sCSF T1 %.2f s, T2 %.2f s", int(calibration.pixels[0]), int(calibration.pixels[2]),
                     " and the grey-matter corner" if "gm" in calibration.calibrated else "",
                     float(v[2, 1]), 1000 * float(v[2, 2]), float(v[2, 0]),
                     f"GM T1 {float(v[1, 1]):.3f} s, T2 {1000 * float(v[1, 2]):.1f} ms, PD {float(v[1, 0]):.2f}; "
                     if "gm" in calibration.calibrated else "", float(v[0, 1]), float(v[0, 2]))
            if grey and "gm" not in calibration.calibrated:
                log.info("no grey-matter corner in this volume: grey matter keeps the network's level")
            out, std = network_maps(calibration.scales.to(volumes.dtype), "W2Q with the calibrated scales")
            maps = out[:, todo].transpose(0, 1)
            moved = tissue_shift(maps, weights, pure, calibration, inside,
                                 node_weight=0.5 if "gm" in calibration.calibrated else None)(maps, inside).to(out)
            std[:, todo] = (std[:, todo].transpose(0, 1) * moved / maps.clamp_min(1e-12)).transpose(0, 1).to(std)  # relative
            out[:, todo] = (moved * inside[:, None]).transpose(0, 1)
    if return_std:
        return out, std, calibration
    return out
