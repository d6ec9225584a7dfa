"""W2Q over a whole volume of any in-plane size: the slices through the network on its training grid,
the intensity calibration over the volume, a fit at the native resolution (used by ``pinqi map``)."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .calibration import calibrate_tissues, tissue_shift
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
        x = F.interpolate(x, size=(size, size), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    return x, (ny, nx, n)


def _from_grid(x: torch.Tensor, info: tuple[int, int, int]) -> torch.Tensor:
    ny, nx, n = info
    if x.shape[-1] != n:
        x = F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False)
    return x[..., :ny, :nx]


def map_volume(model: W2Q, image_size: int, volumes: torch.Tensor, mask: torch.Tensor, protocols: torch.Tensor,
               types: torch.Tensor, available: torch.Tensor, batch_size: int = 8, progress: bool = True,
               return_std: bool = False, calibrate: bool = True) -> Any:
    """Maps ``(3, Z, Y, X)`` of RAS-ordered slices ``volumes`` ``(3, Z, Y, X)`` (zeros for missing
    contrasts), ``mask`` ``(Z, Y, X)``, protocol ``(3, 6)`` (or ``(3, 4)``), types ``(3,)``,
    availability ``(3,)``; with ``return_std`` also their standard deviations ``(3, Z, Y, X)``.

    ``calibrate``: the tissue calibration of :mod:`pinqi.w2q.calibration` over the whole volume
    (segment with the network's first maps, MAP of the scales from pure CSF and WM, the network
    with those scales, re-centring); falls back to the network alone, with a warning, when the
    volume has too few pure CSF or WM pixels. The calibration (or None) is logged and, with
    ``return_std``, returned third.
    """
    nz, nf = volumes.shape[1], protocols.shape[-1]
    out, std = torch.zeros(3, *volumes.shape[1:]), torch.zeros(3, *volumes.shape[1:])
    todo = [z for z in range(nz) if bool(mask[z].any())]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]

    def grid(zs: list[int]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
        small, info = _to_grid(volumes[:, zs].transpose(0, 1).contiguous(), image_size, "bilinear")
        small_mask, _ = _to_grid(mask[zs][:, None].float(), image_size, "bilinear")
        return small, small_mask[:, 0] > 0.5, info

    def inputs(b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return protocols.expand(b, 3, nf), types.expand(b, 3), available.expand(b, 3)

    grids = [grid(zs) for zs in batches]  # (slices, mask, info) on the training grid, per batch
    calibration, scales = None, None
    if calibrate and todo:
        with torch.no_grad():
            firsts = []
            for zs, (small, small_mask, _) in tqdm(list(zip(batches, grids)), desc="W2Q calibration",
                                                   disable=not progress, unit="batch"):
                seq, typ, av = inputs(len(zs))
                firsts.append(model(small, seq, typ, small_mask, av, n_iterations=0).network[0])
            weights, pure = segment_tissues(torch.cat(firsts), torch.cat([g[1] for g in grids]))
            signal = MultiContrastSignal(protocols[None].to(torch.float64), types[None])
            calibration = calibrate_tissues(torch.cat([g[0] for g in grids]), pure, signal, available)
        if calibration is None:
            log.warning("tissue calibration skipped: fewer than 8 pure CSF or pure WM pixels in the volume; the maps "
                        "carry the network's own intensity calibration (see pinqi.w2q.calibration)")
        else:
            scales = calibration.scales.to(torch.float32)
            log.info("tissue calibration from %d pure CSF and %d pure WM pixels: WM T1 %.3f s, T2 %.1f ms, PD %.2f; "
                     "CSF T1 %.2f s, T2 %.2f s", int(calibration.pixels[0]), int(calibration.pixels[2]),
                     float(calibration.values[2, 1]), 1000 * float(calibration.values[2, 2]),
                     float(calibration.values[2, 0]), float(calibration.values[0, 1]), float(calibration.values[0, 2]))
    finals = []
    bar = tqdm(total=len(todo), desc="W2Q slices", disable=not progress, unit="slice")
    for zs, (small, small_mask, _) in zip(batches, grids):
        b = len(zs)
        seq, typ, av = inputs(b)
        with torch.no_grad():
            finals.append(model(small, seq, typ, small_mask, av,
                                intensity_scale=None if scales is None else scales.expand(b, 3)).final)
        bar.update(b)
    bar.close()
    weights_native, pure_native, start = [], [], 0
    for zs, p_small, (_, _, info) in zip(batches, finals, grids):
        imgs, msk = volumes[:, zs].transpose(0, 1).contiguous(), mask[zs]
        b = len(zs)
        native = info[2] == image_size and info[:2] == (image_size, image_size)
        with torch.no_grad():
            if native and not return_std:
                p = p_small
            else:
                p, s = model.refit(imgs, *inputs(b)[:2], msk, p_small if native else _from_grid(p_small, info),
                                   inputs(b)[2], return_std=True,
                                   intensity_scale=None if scales is None else scales.expand(b, 3))
                std[:, zs] = (s * msk[:, None]).transpose(0, 1)
        out[:, zs] = (p * msk[:, None]).transpose(0, 1)
        if calibration is not None:  # the segmentation on the native grid, for the re-centring below
            weights_native.append(_from_grid(weights[start : start + b].float(), info))
            pure_native.append(_from_grid(pure[start : start + b].float(), info) > 0.5)
        start += b
    if calibration is not None:
        # re-centre the written maps themselves: the native fit moves them from the training grid's maps
        maps = out[:, todo].transpose(0, 1)  # (S, 3, Y, X)
        shift = tissue_shift(maps, torch.cat(weights_native), torch.cat(pure_native), calibration, mask[todo])
        moved = shift(maps, mask[todo])
        std[:, todo] = (std[:, todo].transpose(0, 1) * moved / maps.clamp_min(1e-12)).transpose(0, 1)  # relative
        out[:, todo] = (moved * mask[todo][:, None]).transpose(0, 1)
    if return_std:
        return out, std, calibration
    return out
