"""Networks of W2Q: protocol embedding, per-contrast conditioned encoders, fusion, decoder.

Architecture (:class:`W2QNet`)
------------------------------
* **Protocol embedding** (:class:`ProtocolEmbedding`): each contrast's protocol features
  ``(B, T, F)`` (see :func:`pinqi.w2q.signal.protocol_features`: log TR, log TE, TI, flip angle,
  sequence type and the log signals of canonical tissues under that protocol) pass through a
  two-layer MLP to a vector ``e_c`` of size ``embed_dim``.
* **One encoder per contrast** (:class:`ContrastEncoder`): residual blocks
  (:class:`~pinqi.common.unet.ResidualBlock`) on (normalised image, brain mask), 2x2 max-pooling
  between levels, and FiLM conditioning on ``e_c`` in *every* level — the protocol modulates the
  features everywhere.
* **Fusion** (:func:`fuse`): per level, the mean and the maximum over the *available* contrasts
  (HeMIS-style), so any non-empty subset of contrasts works.
* **Decoder** (:meth:`W2QNet.decode`): U-Net decoder over the fused features plus features of the
  current fit state (maps and data residuals, :class:`FitStateEncoder`), FiLM-conditioned on the
  iteration index. The encoders run once per forward; the decoder once per W2Q iteration.
* **Head**: a 1x1 convolution to raw values ``r`` mapped into the bounds by :func:`maps_from_raw`
  (PD linear-sigmoid in ``(0, 2)``, T1 and T2 log-sigmoid in ``(0.05, 6)`` and ``(0.005, 3)`` s, the
  bounds of :class:`simulation.weighted_models.WeightedSignalModel`). Iteration 0 adds ``r`` to a
  learned constant; later iterations use a second, zero-initialised head whose output is added to
  ``raw_from_maps(p_fit)``, i.e. they refine the fit and start as the identity.

:class:`PlainUNet` is the baseline without any sequence information: a
:class:`~pinqi.common.unet.UNet` on the stacked normalised images, availability planes and mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common.bounded import BoundedMap
from ..common.unet import ResidualBlock, UNet, Upsample, max_pool

__all__ = [
    "MAP_LOWER",
    "MAP_UPPER",
    "INITIAL_MAPS",
    "FIT_STATE_T2_UNIT",
    "MAP_BOUNDS",
    "maps_from_raw",
    "raw_from_maps",
    "ProtocolEmbedding",
    "ContrastEncoder",
    "FitStateEncoder",
    "fuse",
    "W2QNet",
    "PlainUNet",
]

#: Bounds of (PD, T1 [s], T2 [s]) — those of the weighted signal models.
MAP_LOWER: tuple[float, float, float] = (0.0, 0.05, 0.005)
MAP_UPPER: tuple[float, float, float] = (2.0, 6.0, 3.0)
#: T2 unit [s] of the fit state: ``ln(T2 / FIT_STATE_T2_UNIT)`` is O(1) in tissue, like ``ln T1``.
FIT_STATE_T2_UNIT = 0.1
#: What the head returns for a zero raw output at iteration 0 (white-matter-like).
INITIAL_MAPS: tuple[float, float, float] = (0.8, 1.2, 0.09)
#: The head's map of raw values into the bounds: PD linear, T1 and T2 on a log scale.
MAP_BOUNDS = BoundedMap(MAP_LOWER, MAP_UPPER, log_scale=(1, 2), inverse_eps=1e-6)


def maps_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """Raw head output ``(B, 3, Y, X)`` -> (PD, T1 [s], T2 [s]) strictly inside the bounds."""
    return MAP_BOUNDS(raw)


def raw_from_maps(p: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`maps_from_raw` (values at or beyond a bound are clamped just inside)."""
    return MAP_BOUNDS.inverse(p)


class ProtocolEmbedding(nn.Module):
    """Two-layer MLP ``(B, T, n_features) -> (B, T, dim)``."""

    def __init__(self, n_features: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class ContrastEncoder(nn.Module):
    """Residual blocks with 2x2 max-pooling between levels, FiLM on the protocol at every level."""

    def __init__(self, in_channels: int, features: Sequence[int], cond_dim: int, group_size: int) -> None:
        super().__init__()
        chans = [in_channels, *features]
        self.blocks = nn.ModuleList(
            ResidualBlock(chans[i], chans[i + 1], cond_dim=cond_dim, group_size=group_size) for i in range(len(features))
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level, block in enumerate(self.blocks):
            x = block(max_pool(x) if level else x, cond)
            out.append(x)
        return out


class FitStateEncoder(nn.Module):
    """3x3 convolution + SiLU per level (average pooling between levels) of the fit state."""

    def __init__(self, in_channels: int, features: Sequence[int]) -> None:
        super().__init__()
        chans = [in_channels, *features]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(len(features)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level, conv in enumerate(self.convs):
            x = F.silu(conv(F.avg_pool2d(x, 2) if level else x))
            out.append(x)
        return out


def fuse(features: Sequence[torch.Tensor], available: torch.Tensor) -> torch.Tensor:
    """Mean and maximum over the available contrasts.

    Parameters
    ----------
    features
        T tensors ``(B, C, Y, X)``, one per contrast.
    available
        ``(B, T)`` bool; every sample must have at least one available contrast.

    Returns
    -------
    ``(B, 2C, Y, X)``: [mean, max].
    """
    stacked = torch.stack(list(features), 1)  # (B, T, C, Y, X)
    w = available.to(stacked.dtype).view(*available.shape, 1, 1, 1)
    mean = (stacked * w).sum(1) / w.sum(1).clamp_min(1)
    floor = torch.finfo(stacked.dtype).min
    peak = torch.where(w > 0, stacked, torch.full_like(stacked, floor)).amax(1)
    return torch.cat([mean, peak], 1)


class W2QNet(nn.Module):
    """The W2Q parameter network (module docstring).

    Parameters
    ----------
    n_protocol_features
        ``F`` of the protocol features.
    n_contrasts
        ``T`` (3: T1w, T2w, FLAIR).
    features
        Channels per level, finest first (``len - 1`` down-sampling steps).
    embed_dim
        Size of the protocol and iteration embeddings.
    group_size
        Channels per GroupNorm group.
    n_iterations
        Number of refinement iterations (iteration indices ``0 .. n_iterations``).
    fit_channels
        Channels of the fit state (maps + one residual per contrast + mask).
    refine
        Build the refinement head (zero-initialised, so that a refinement pass first returns the
        fit unchanged); not needed for the network-only baseline.
    """

    def __init__(
        self,
        n_protocol_features: int,
        n_contrasts: int = 3,
        features: Sequence[int] = (16, 32, 64),
        embed_dim: int = 32,
        group_size: int = 8,
        n_iterations: int = 2,
        fit_channels: int | None = None,
        refine: bool = True,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) < 1 or min(features) < 1:
            raise ValueError(f"features must be positive channel counts; got {features}")
        self.features, self.n_contrasts = features, n_contrasts
        self.fit_channels = fit_channels if fit_channels is not None else 3 + n_contrasts + 1
        self.embedding = ProtocolEmbedding(n_protocol_features, embed_dim)
        self.encoders = nn.ModuleList(ContrastEncoder(2, features, embed_dim, group_size) for _ in range(n_contrasts))
        self.fit_encoder = FitStateEncoder(self.fit_channels, features)
        self.iteration_embedding = nn.Embedding(n_iterations + 1, embed_dim)
        top = features[-1]
        self.bottleneck = ResidualBlock(3 * top, top, cond_dim=embed_dim, group_size=group_size)
        self.upsample = nn.ModuleList(Upsample(features[i + 1], features[i]) for i in range(len(features) - 1))
        self.decoder = nn.ModuleList(
            ResidualBlock(4 * features[i], features[i], cond_dim=embed_dim, group_size=group_size)
            for i in range(len(features) - 1)
        )
        self.head = nn.Conv2d(features[0], 3, 1, bias=False)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        self.refine_head = nn.Conv2d(features[0], 3, 1, bias=False) if refine else None
        if self.refine_head is not None:
            nn.init.zeros_(self.refine_head.weight)
        initial = raw_from_maps(torch.tensor(INITIAL_MAPS).view(1, 3, 1, 1)).flatten()
        self.initial_raw = nn.Parameter(initial)

    @property
    def multiple(self) -> int:
        """Image sizes must be multiples of this."""
        return 2 ** (len(self.features) - 1)

    def encode(
        self, images: torch.Tensor, mask: torch.Tensor, available: torch.Tensor, protocol: torch.Tensor
    ) -> list[torch.Tensor]:
        """Fused multi-level features.

        Parameters
        ----------
        images
            ``(B, T, Y, X)`` normalised images (zeros for unavailable contrasts).
        mask
            ``(B, Y, X)`` brain mask.
        available
            ``(B, T)`` bool.
        protocol
            ``(B, T, F)`` protocol features.
        """
        emb = self.embedding(protocol)  # (B, T, d)
        m = mask.to(images.dtype)[:, None]
        per_contrast = [
            enc(torch.cat([images[:, c : c + 1], m], 1), emb[:, c]) for c, enc in enumerate(self.encoders)
        ]
        return [fuse([pc[level] for pc in per_contrast], available) for level in range(len(self.features))]

    def fit_state(self, p_fit: torch.Tensor, residual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The fit state the decoder refines from, ``(B, fit_channels, Y, X)``.

        Parameters
        ----------
        p_fit
            ``(B, 3, Y, X)`` the fit's (PD, T1 [s], T2 [s]).
        residual
            ``(B, T, Y, X)`` the fit's weighted data residual per contrast (normalised units).
        mask
            ``(B, Y, X)`` brain mask.

        Returns
        -------
        ``[PD, ln T1, ln(T2 / FIT_STATE_T2_UNIT), residual, mask]`` along the channels.
        """
        t2 = (p_fit[:, 2:3] / FIT_STATE_T2_UNIT).log()
        return torch.cat([p_fit[:, :1], p_fit[:, 1:2].log(), t2, residual, mask[:, None].to(p_fit.dtype)], 1)

    def decode(
        self, fused: list[torch.Tensor], iteration: int, fit_state: torch.Tensor | None, p_fit: torch.Tensor | None
    ) -> torch.Tensor:
        """Maps ``(B, 3, Y, X)`` for iteration ``iteration`` (0: no fit yet; then refine ``p_fit``)."""
        b, _, ny, nx = fused[0].shape
        if fit_state is None:
            fit_state = fused[0].new_zeros(b, self.fit_channels, ny, nx)
        fit = self.fit_encoder(fit_state)
        index = torch.full((b,), iteration, dtype=torch.long, device=fused[0].device)
        cond = self.iteration_embedding(index).to(fused[0].dtype)
        h = self.bottleneck(torch.cat([fused[-1], fit[-1]], 1), cond)
        for level in reversed(range(len(self.features) - 1)):
            h = self.upsample[level](h)
            h = self.decoder[level](torch.cat([h, fused[level], fit[level]], 1), cond)
        if p_fit is None:
            return maps_from_raw(self.initial_raw.view(1, 3, 1, 1) + self.head(h))
        if self.refine_head is None:
            raise ValueError("this network was built without a refinement head (refine=False)")
        return maps_from_raw(raw_from_maps(p_fit) + self.refine_head(h))


class PlainUNet(nn.Module):
    """Baseline without sequence information: U-Net on [images, availability planes, mask]."""

    def __init__(self, n_contrasts: int = 3, features: Sequence[int] = (16, 32, 64), group_size: int = 8) -> None:
        super().__init__()
        self.n_contrasts = n_contrasts
        self.unet = UNet(2 * n_contrasts + 1, 3, features, group_size=group_size)
        nn.init.normal_(self.unet.head.weight, 0.0, 0.01)
        with torch.no_grad():
            self.unet.head.bias.copy_(raw_from_maps(torch.tensor(INITIAL_MAPS).view(1, 3, 1, 1)).flatten())

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.unet.features) - 1)

    def forward(self, images: torch.Tensor, mask: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, 3, Y, X)`` from normalised images ``(B, T, Y, X)``, mask, availability ``(B, T)``."""
        planes = available.to(images.dtype)[..., None, None].expand_as(images)
        x = torch.cat([images, planes, mask.to(images.dtype)[:, None]], 1)
        return maps_from_raw(self.unet(x))
