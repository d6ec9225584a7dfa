"""The weighted signal models of a per-sample protocol, and the protocol features W2Q embeds.

:class:`MultiContrastSignal` evaluates, for every sample and contrast slot, the signal model of
that contrast's sequence type with that sample's (TR, TE, TI, FA) — the forward model of the W2Q
fit layer. :func:`protocol_features` turns a protocol into the inputs of the protocol embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from simulation.mprage import MPRAGE
from simulation.weighted_models import FLAIR, SpinEcho, SpoiledGRE, WeightedSignalModel

from .protocols import CONTRASTS, SEQUENCE_TYPES, as_protocol

__all__ = ["MultiContrastSignal", "protocol_features", "N_PROTOCOL_FEATURES"]

#: Canonical (T1 [s], T2 [s]) of white matter, grey matter and CSF per protocol-feature version:
#: 1 the middles of the legacy simulated ranges, 2 the centres of ``W2Q_TISSUE_PRIOR`` (literature).
_TISSUES = {1: ((1.15, 0.08), (1.6, 0.1), (3.0, 1.65)), 2: ((0.9, 0.07), (1.4, 0.095), (4.0, 1.8))}
#: Length of :func:`protocol_features`' last axis per version (1: no MP-RAGE).
N_PROTOCOL_FEATURES = {1: 13, 2: 16}


class MultiContrastSignal(nn.Module):
    """Per-contrast weighted signal models for a per-sample protocol: ``(B, 3, Y, X) -> (B, T, Y, X)``.

    Contrast ``c`` of sample ``b`` uses the model ``SEQUENCE_TYPES[sequence_types[b, c]]``
    (:class:`~simulation.SpinEcho`, :class:`~simulation.SpoiledGRE`, :class:`~simulation.FLAIR` or
    :class:`~simulation.mprage.MPRAGE`, the last two with the smooth magnitude) with parameters
    ``sequence_params[b, c]`` = (TR [s], TE [s], TI [s], FA [deg], τ [s], N) (``(B, T, 6)``, or
    ``(B, T, 4)`` without MP-RAGE). Gradients reach ``sequence_params``.
    """

    bounds = WeightedSignalModel.bounds

    def __init__(self, sequence_params: torch.Tensor, sequence_types: torch.Tensor, magnitude_eps: float = 1e-3) -> None:
        super().__init__()
        sequence_params = as_protocol(sequence_params, sequence_types)
        self.batch, self.n_contrasts = sequence_types.shape
        self.groups: list[list[tuple[torch.Tensor | None, nn.Module]]] = []
        for c in range(self.n_contrasts):
            groups = []
            kinds = sequence_types[:, c]
            for kind in sorted(set(kinds.tolist())):
                idx = torch.nonzero(kinds == kind).flatten()
                tr, te, ti, fa, tau, n = sequence_params[idx, c].unbind(-1)
                name = SEQUENCE_TYPES[kind]
                try:
                    if name == "spin_echo":
                        model: nn.Module = SpinEcho(tr, te, per_sample=True)
                    elif name == "spoiled_gre":
                        model = SpoiledGRE(tr, te, fa, per_sample=True)
                    elif name == "mprage":
                        model = MPRAGE(tr, te, ti, fa, tau, n, magnitude_eps=magnitude_eps, per_sample=True)
                    else:
                        model = FLAIR(tr, te, ti, magnitude_eps=magnitude_eps, per_sample=True)
                except ValueError as error:
                    raise ValueError(f"{CONTRASTS[c] if c < len(CONTRASTS) else c} ({name}): {error}") from None
                groups.append((None if idx.numel() == self.batch else idx.to(sequence_params.device), model))
            self.groups.append(groups)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if p.ndim != 4 or p.shape[:2] != (self.batch, 3):
            raise ValueError(f"p must have shape (B, 3, Y, X) with B = {self.batch}; got {tuple(p.shape)}")
        out = []
        for groups in self.groups:
            if groups[0][0] is None:
                out.append(groups[0][1](p))
                continue
            img = p.new_zeros(self.batch, 1, *p.shape[2:])
            for idx, model in groups:
                img = img.index_copy(0, idx, model(p.index_select(0, idx)))
            out.append(img)
        return torch.cat(out, 1)


def protocol_features(sequence_params: torch.Tensor, sequence_types: torch.Tensor,
                      signal: MultiContrastSignal | None = None, version: int = 1) -> torch.Tensor:
    """Features ``(B, T, F)`` of each contrast's protocol for the embedding (F = ``N_PROTOCOL_FEATURES[version]``).

    ``ln TR``, ``ln(TE + 1 ms)``, [TI > 0], ``ln TI`` (0 without), ``TI / TR``, ``sin α``,
    ``cos α``, the canonical-tissue signals under the protocol: ``ln q(WM)``,
    ``ln q(GM) − ln q(WM)``, ``ln q(CSF) − ln q(WM)`` (PD = 1, offset 1e-3), then version 1:
    one-hot of the first 3 sequence types (MP-RAGE refused); version 2: ``ln τ`` (0 without),
    ``N / 256``, one-hot of the 4 types.
    """
    if version not in N_PROTOCOL_FEATURES:
        raise ValueError(f"protocol feature version must be one of {sorted(N_PROTOCOL_FEATURES)}; got {version}")
    seq = as_protocol(sequence_params, sequence_types)
    n_types = 3 if version == 1 else len(SEQUENCE_TYPES)
    if bool((sequence_types >= n_types).any()):
        raise ValueError("these W2Q weights (protocol features version 1) predate MP-RAGE; use weights trained with "
                         "MP-RAGE (protocol_version 2) or give a spin-echo or spoiled-GRE T1w image")
    signal = signal if signal is not None else MultiContrastSignal(seq, sequence_types)
    tr, te, ti, fa, tau, n = seq.unbind(-1)
    has_ti = ti > 0
    alpha = fa * (math.pi / 180)
    basic = [tr.log(), (te + 1e-3).log(), has_ti.to(seq.dtype), torch.where(has_ti, ti.clamp_min(1e-3).log(), 0 * ti),
             ti / tr, torch.sin(alpha), torch.cos(alpha)]
    tissues = torch.tensor([[1.0] * 3, [t[0] for t in _TISSUES[version]], [t[1] for t in _TISSUES[version]]],
                           dtype=seq.dtype)
    tissues = tissues.to(seq.device).view(1, 3, 1, 3).expand(seq.shape[0], 3, 1, 3)
    log_q = (signal(tissues)[:, :, 0] + 1e-3).log()  # (B, T, 3)
    physics = [log_q[..., 0], log_q[..., 1] - log_q[..., 0], log_q[..., 2] - log_q[..., 0]]
    if version == 2:
        basic += [torch.where(tau > 0, tau.clamp_min(1e-4).log(), 0 * tau), n / 256]
    onehot = F.one_hot(sequence_types.long(), n_types).to(seq.dtype)
    return torch.cat([torch.stack(basic + physics, -1), onehot], -1)
