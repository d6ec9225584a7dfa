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

from simulation.weighted_models import FLAIR, SpinEcho, SpoiledGRE, WeightedSignalModel

from .protocols import CONTRASTS, SEQUENCE_TYPES, check_protocol

__all__ = ["MultiContrastSignal", "protocol_features", "N_PROTOCOL_FEATURES"]

#: Canonical (T1 [s], T2 [s]) of white matter, grey matter and CSF (middles of the simulated ranges).
_TISSUES = ((1.15, 0.08), (1.6, 0.1), (3.0, 1.65))
#: Length of :func:`protocol_features`' last axis.
N_PROTOCOL_FEATURES = 13


class MultiContrastSignal(nn.Module):
    """Per-contrast weighted signal models for a per-sample protocol: ``(B, 3, Y, X) -> (B, T, Y, X)``.

    Contrast ``c`` of sample ``b`` uses the model ``SEQUENCE_TYPES[sequence_types[b, c]]``
    (:class:`~simulation.SpinEcho`, :class:`~simulation.SpoiledGRE` or :class:`~simulation.FLAIR`
    with the smooth magnitude) with parameters ``sequence_params[b, c] = (TR [s], TE [s], TI [s],
    FA [deg])``. Gradients reach ``sequence_params``.
    """

    bounds = WeightedSignalModel.bounds

    def __init__(self, sequence_params: torch.Tensor, sequence_types: torch.Tensor, magnitude_eps: float = 1e-3) -> None:
        super().__init__()
        check_protocol(sequence_params, sequence_types)
        self.batch, self.n_contrasts = sequence_types.shape
        self.groups: list[list[tuple[torch.Tensor | None, nn.Module]]] = []
        for c in range(self.n_contrasts):
            groups = []
            kinds = sequence_types[:, c]
            for kind in sorted(set(kinds.tolist())):
                idx = torch.nonzero(kinds == kind).flatten()
                tr, te, ti, fa = sequence_params[idx, c].unbind(-1)
                name = SEQUENCE_TYPES[kind]
                try:
                    if name == "spin_echo":
                        model: nn.Module = SpinEcho(tr, te, per_sample=True)
                    elif name == "spoiled_gre":
                        model = SpoiledGRE(tr, te, fa, per_sample=True)
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
                      signal: MultiContrastSignal | None = None) -> torch.Tensor:
    """Features ``(B, T, 13)`` of each contrast's protocol for the embedding.

    ``ln TR``, ``ln(TE + 1 ms)``, [TI > 0], ``ln TI`` (0 without), ``TI / TR``, ``sin α``,
    ``cos α``, one-hot sequence type (3), and the canonical-tissue signals under the protocol:
    ``ln q(WM)``, ``ln q(GM) − ln q(WM)``, ``ln q(CSF) − ln q(WM)`` (PD = 1, offset 1e-3).
    """
    signal = signal if signal is not None else MultiContrastSignal(sequence_params, sequence_types)
    seq = sequence_params
    tr, te, ti, fa = seq.unbind(-1)
    has_ti = ti > 0
    alpha = fa * (math.pi / 180)
    basic = [tr.log(), (te + 1e-3).log(), has_ti.to(seq.dtype), torch.where(has_ti, ti.clamp_min(1e-3).log(), 0 * ti),
             ti / tr, torch.sin(alpha), torch.cos(alpha)]
    onehot = F.one_hot(sequence_types.long(), len(SEQUENCE_TYPES)).to(seq.dtype)
    tissues = torch.tensor([[1.0] * 3, [t[0] for t in _TISSUES], [t[1] for t in _TISSUES]], dtype=seq.dtype)
    tissues = tissues.to(seq.device).view(1, 3, 1, 3).expand(seq.shape[0], 3, 1, 3)
    log_q = (signal(tissues)[:, :, 0] + 1e-3).log()  # (B, T, 3)
    physics = [log_q[..., 0], log_q[..., 1] - log_q[..., 0], log_q[..., 2] - log_q[..., 0]]
    return torch.cat([torch.stack(basic + physics, -1), onehot], -1)
