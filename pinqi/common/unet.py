"""The conditioned residual U-Net of PINQI and its blocks: FiLM, residual blocks, up-sampling.

:class:`UNet` assembles the blocks (re-exported by :mod:`pinqi.networks`, whose docstring sums up
the architecture and its reading of the paper). Two spatial layouts share every block:

``"2d"``
    feature maps ``(B, C, Y, X)``, 3x3 convolutions.
``"2.5d"``
    feature maps ``(B, C, T, Y, X)``. The spatial convolutions have kernel ``(1, 3, 3)``: a 3x3
    convolution applied to every one of the ``T`` images as a batch; each block adds a temporal
    convolution with kernel ``(3, 1, 1)`` and zero padding that runs along ``T`` with every pixel as
    a batch element. Both are :class:`~pinqi.factorised_conv.FactorisedConv3d`: ``Conv3d`` weights
    (so checkpoints keep the 3-D shapes) computed by ``conv2d``, which is far faster on the CPU.
    ``T`` is not baked into any weight, so a network works for any number of images.

Group normalisation: the paper says "group size 16"; we read it as 16 channels per group, so
``num_groups = channels // 16`` (at least 1, lowered until it divides ``channels``), e.g. 16 -> 1,
48 -> 3, 128 -> 8 groups. In the 2.5-D layout the statistics of a group are taken over
``(channels of the group, T, Y, X)``, i.e. shared by the ``T`` images of one sample, which keeps the
relative intensity of the images (the contrast that encodes T1) instead of normalising it away.
The released PINQI code instead uses a fixed number of groups (16 in P_θ, 8 in Y_θ); the option
``norm_groups`` reproduces that (it does not change the number of parameters).

Initialisation: each residual block computes ``skip(x) + g · F(x)`` with a learnable scalar gate
``g`` (ReZero-like) initialised to ``gate_init`` (default 1e-3), and ``skip`` a 1x1 convolution
(identity when the channel counts agree). At initialisation every block therefore acts almost
pixel-wise, as the paper prescribes, while every gate and convolution already receives a nonzero
gradient in the first step. FiLM projections are zero-initialised, so the conditioning starts as
the identity (the embedding table gets its first nonzero gradient once they have moved).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from .factorised_conv import FactorisedConv3d, per_image, to_channels_last

Layout = Literal["2d", "2.5d"]


def num_groups(channels: int, group_size: int = 16) -> int:
    """Number of GroupNorm groups for ``channels`` with about ``group_size`` channels per group.

    Returns ``channels // group_size`` (at least 1), lowered until it divides ``channels``.
    """
    if channels < 1 or group_size < 1:
        raise ValueError(f"channels and group_size must be positive; got {channels}, {group_size}")
    groups = max(1, channels // group_size)
    while channels % groups:
        groups -= 1
    return groups


def _check_layout(layout: str) -> None:
    if layout not in ("2d", "2.5d"):
        raise ValueError(f"layout must be '2d' or '2.5d'; got {layout!r}")


def spatial_conv(
    in_channels: int, out_channels: int, layout: Layout, kernel: int = 3, bias: bool = True
) -> nn.Module:
    """A ``kernel x kernel`` convolution in the image plane ("same" zero padding)."""
    _check_layout(layout)
    if layout == "2d":
        return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias)
    pad = (0, kernel // 2, kernel // 2)
    return FactorisedConv3d(in_channels, out_channels, (1, kernel, kernel), padding=pad, bias=bias)


def _pool2(images: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(images, 2)


def _upsample2(images: torch.Tensor) -> torch.Tensor:
    return F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooling with stride 2 in ``(Y, X)`` only; ``Y, X`` must be even; layout kept."""
    return per_image(_pool2, x)


def iteration_indices(iteration: int | torch.Tensor, batch_size: int, max_iterations: int) -> torch.Tensor:
    """Validate an iteration index and return it as a ``(B,)`` ``long`` tensor.

    Parameters
    ----------
    iteration
        Python ``int`` (same for the whole batch), 0-d or ``(B,)`` integer tensor, each in
        ``[0, max_iterations)`` (values are checked for CPU tensors; on an accelerator the check
        would cost a synchronisation and is left to the embedding).
    batch_size
        ``B``.
    max_iterations
        Number of valid indices.
    """
    if isinstance(iteration, bool) or not isinstance(iteration, (int, torch.Tensor)):
        raise TypeError(f"iteration must be an int or an integer tensor; got {type(iteration).__name__}")
    if isinstance(iteration, int):
        if not 0 <= iteration < max_iterations:
            raise ValueError(f"iteration must be in [0, {max_iterations}); got {iteration}")
        return torch.full((batch_size,), iteration, dtype=torch.long)
    if iteration.is_floating_point() or iteration.is_complex() or iteration.dtype == torch.bool:
        raise TypeError(f"iteration must be an integer tensor; got dtype {iteration.dtype}")
    if iteration.ndim == 0:
        iteration = iteration.expand(batch_size)
    if iteration.shape != (batch_size,):
        raise ValueError(f"iteration must be an int or have shape ({batch_size},); got {tuple(iteration.shape)}")
    if iteration.device.type == "cpu" and iteration.numel():
        low, high = int(iteration.min()), int(iteration.max())
        if low < 0 or high >= max_iterations:
            raise ValueError(f"iteration must be in [0, {max_iterations}); got values in [{low}, {high}]")
    return iteration.long()


class IterationEmbedding(nn.Module):
    """Learned embedding of the unrolled iteration index: ``nn.Embedding(max_iterations, dim)``.

    Parameters
    ----------
    max_iterations
        Number of distinct iteration indices ``0 .. max_iterations - 1``.
    dim
        Size of the conditioning vector it produces.
    """

    def __init__(self, max_iterations: int = 8, dim: int = 64) -> None:
        super().__init__()
        if max_iterations < 1 or dim < 1:
            raise ValueError(f"max_iterations and dim must be positive; got {max_iterations}, {dim}")
        self.max_iterations = max_iterations
        self.embedding = nn.Embedding(max_iterations, dim)

    def forward(self, iteration: int | torch.Tensor, batch_size: int) -> torch.Tensor:
        """Conditioning vectors ``(B, dim)`` for ``iteration`` (see :func:`iteration_indices`)."""
        index = iteration_indices(iteration, batch_size, self.max_iterations)
        return self.embedding(index.to(self.embedding.weight.device))


class FiLM(nn.Module):
    """Feature-wise linear modulation ``x · (1 + γ(c)) + β(c)`` from a conditioning vector ``c``.

    ``(γ, β) = Linear(cond_dim, 2·channels)(c)``, zero-initialised so that FiLM starts as the
    identity. ``c`` can come from :class:`IterationEmbedding` or from any other producer (W2Q
    conditions on sequence parameters).
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.project = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def coefficients(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 + γ, β)``, each ``(B, channels)``, for ``cond (B, cond_dim)``."""
        scale, shift = self.project(cond).unflatten(-1, (2, self.channels)).unbind(-2)
        return 1 + scale, shift

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Modulate ``x (B, C, *spatial)`` with ``cond (B, cond_dim)``."""
        scale, shift = self.coefficients(cond)
        trailing = (1,) * (x.ndim - 2)
        scale = scale.view(*scale.shape, *trailing)
        shift = shift.view(*shift.shape, *trailing)
        return torch.addcmul(shift, x, scale)


class ResidualBlock(nn.Module):
    """``skip(x) + g · F(x)`` with ``F`` = conv3x3-GN-FiLM-SiLU-conv3x3-[temporal conv]-GN-SiLU.

    Parameters
    ----------
    in_channels, out_channels
        Channel counts; ``skip`` is a 1x1 convolution when they differ, else the identity.
    layout
        ``"2d"`` or ``"2.5d"`` (adds the temporal convolution, see the module docstring).
    cond_dim
        Size of the conditioning vector for FiLM after the first convolution; ``None``: no FiLM.
    group_size
        Channels per GroupNorm group (see :func:`num_groups`).
    gate_init
        Initial value of the residual gate ``g``.
    norm_groups
        Fixed number of GroupNorm groups instead of ``group_size`` (lowered until it divides).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: Layout = "2d",
        cond_dim: int | None = None,
        group_size: int = 16,
        gate_init: float = 1e-3,
        norm_groups: int | None = None,
    ) -> None:
        super().__init__()
        _check_layout(layout)
        if norm_groups is None:
            groups = num_groups(out_channels, group_size)
        else:
            groups = max(g for g in range(1, min(norm_groups, out_channels) + 1) if out_channels % g == 0)
        self.conv1 = spatial_conv(in_channels, out_channels, layout)
        self.norm1 = nn.GroupNorm(groups, out_channels)
        self.film = FiLM(cond_dim, out_channels) if cond_dim else None
        self.conv2 = spatial_conv(out_channels, out_channels, layout)
        self.temporal = (
            FactorisedConv3d(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), bias=False)
            if layout == "2.5d"
            else None
        )
        self.norm2 = nn.GroupNorm(groups, out_channels)
        if in_channels == out_channels:
            self.skip: nn.Module = nn.Identity()
        elif layout == "2d":
            self.skip = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.skip = FactorisedConv3d(in_channels, out_channels, 1)
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block to ``x`` ((B, C, Y, X) or (B, C, T, Y, X)); ``cond`` (B, cond_dim)."""
        h = self.conv1(x)
        if self.film is None:
            h = self.norm1(h)
        else:
            if cond is None:
                raise ValueError("this block uses FiLM conditioning; cond (B, cond_dim) is required")
            h = self._norm_film(h, cond)
        inplace = not torch.is_grad_enabled()  # h is a fresh temporary; autograd may need it
        h = self.conv2(F.silu(h, inplace=inplace))
        if self.temporal is not None:
            h = self.temporal(h)
        h = F.silu(self.norm2(h), inplace=inplace)
        return torch.addcmul(self.skip(x), self.gate, h)

    def _norm_film(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """GroupNorm followed by FiLM in one ``group_norm`` call.

        The per-sample FiLM coefficients are folded into the norm's affine parameters and the
        batch into the channel axis, ``(B, C, ...) -> (1, B·C, ...)`` with ``B·groups`` groups (a
        view), so no separate normalised tensor has to be kept for the backward pass.
        """
        norm = self.norm1
        scale, shift = self.film.coefficients(cond)  # type: ignore[union-attr]
        weight = (norm.weight * scale).flatten()
        bias = torch.addcmul(shift, norm.bias, scale).flatten()
        batch = h.shape[0]  # (one sample: h itself, which keeps a channels-last layout)
        flat = h if batch == 1 else h.reshape(1, -1, *h.shape[2:])
        out = F.group_norm(flat, batch * norm.num_groups, weight, bias, norm.eps)
        return out.view(h.shape)


class Upsample(nn.Module):
    """2x bilinear interpolation in ``(Y, X)`` followed by a 3x3 convolution without bias.

    (No bias: the next block's first convolution has one.)
    """

    def __init__(self, in_channels: int, out_channels: int, layout: Layout = "2d") -> None:
        super().__init__()
        self.conv = spatial_conv(in_channels, out_channels, layout, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, [T,] Y, X) -> (B, out_channels, [T,] 2Y, 2X)``."""
        return self.conv(per_image(_upsample2, x))


class UNet(nn.Module):
    """Residual U-Net with FiLM conditioning on an iteration index and/or a conditioning vector.

    Parameters
    ----------
    in_channels, out_channels
        Channels of input and output.
    features
        Feature counts per level, finest first, the last being the bottleneck;
        ``len(features) - 1`` down-sampling steps.
    n_iterations_embed
        If given, the network owns an :class:`~pinqi.unet_blocks.IterationEmbedding` with this many
        iteration indices and ``forward`` takes ``iteration``.
    cond_dim
        Size of an external conditioning vector ``cond (B, cond_dim)`` (e.g. sequence parameters
        passed through an MLP). With ``n_iterations_embed`` as well, the iteration embedding has
        this size and is added to ``cond``. Neither given: no FiLM at all.
    embed_dim
        Size of the iteration embedding when ``cond_dim`` is not given.
    layout
        ``"2d"``: ``x`` is ``(B, C, Y, X)``; ``"2.5d"``: ``x`` is ``(B, C, T, Y, X)``.
    group_size, norm_groups
        Channels per GroupNorm group, or a fixed number of groups (see
        :class:`~pinqi.unet_blocks.ResidualBlock`).
    gate_init
        Initial value of every block's residual gate.
    film_bottleneck
        Also condition the bottleneck block (the released PINQI code does not).
    checkpoint
        Recompute each block in the backward pass (``torch.utils.checkpoint``) to save memory.
    channels_last
        Memory layout of the feature maps: ``True`` channels-last (``channels_last`` /
        ``channels_last_3d``; oneDNN's native layout, no copies around the 2.5-D convolutions),
        ``False`` contiguous (the plain eager path), ``None`` (default) channels-last for CPU input
        when gradients are off (inference). Same results to float rounding; not in the state dict.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (32, 64, 96, 128, 128),
        n_iterations_embed: int | None = None,
        cond_dim: int | None = None,
        embed_dim: int = 64,
        layout: Layout = "2d",
        group_size: int = 16,
        norm_groups: int | None = None,
        gate_init: float = 1e-3,
        film_bottleneck: bool = True,
        checkpoint: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if not features or min(features) < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"need positive channel counts and at least one feature level; got in_channels={in_channels}, "
                f"out_channels={out_channels}, features={features}"
            )
        self.in_channels, self.out_channels, self.features = in_channels, out_channels, features
        self.layout: Layout = layout
        self.checkpoint = checkpoint
        self.channels_last = channels_last
        self.cond_dim = cond_dim
        film_dim = cond_dim if cond_dim else (embed_dim if n_iterations_embed else None)
        self.embedding = IterationEmbedding(n_iterations_embed, film_dim) if n_iterations_embed else None
        self.film_dim = film_dim

        block = dict(layout=layout, group_size=group_size, norm_groups=norm_groups, gate_init=gate_init)
        n = len(features)
        self.encoder = nn.ModuleList(
            ResidualBlock(c_in, c_out, cond_dim=film_dim if (level < n - 1 or film_bottleneck) else None, **block)
            for level, (c_in, c_out) in enumerate(zip((in_channels, *features[:-1]), features))
        )
        # The up-sampling convolution keeps the coarser level's channel count; the decoder block
        # then maps (skip + up-sampled) = features[l] + features[l + 1] channels to features[l].
        self.upsample = nn.ModuleList(Upsample(features[l + 1], features[l + 1], layout) for l in range(n - 1))
        self.decoder = nn.ModuleList(
            ResidualBlock(features[l] + features[l + 1], features[l], cond_dim=film_dim, **block) for l in range(n - 1)
        )
        self.head = (nn.Conv2d if layout == "2d" else FactorisedConv3d)(features[0], out_channels, 1)

    def _conditioning(
        self, batch_size: int, iteration: int | torch.Tensor | None, cond: torch.Tensor | None
    ) -> torch.Tensor | None:
        if self.film_dim is None:
            if iteration is not None or cond is not None:
                raise ValueError("this UNet has no conditioning; pass neither iteration nor cond")
            return None
        if self.embedding is None and iteration is not None:
            raise ValueError("this UNet has no iteration embedding (n_iterations_embed=None); pass cond instead")
        if self.embedding is not None and iteration is None:
            raise ValueError("this UNet is conditioned on the iteration; pass iteration (int or (B,) long tensor)")
        if self.cond_dim and cond is None:
            raise ValueError(f"this UNet needs cond of shape ({batch_size}, {self.cond_dim})")
        if cond is not None:
            if not self.cond_dim:
                raise ValueError("this UNet takes no cond vector (cond_dim=None)")
            if cond.shape != (batch_size, self.cond_dim):
                raise ValueError(f"cond must have shape ({batch_size}, {self.cond_dim}); got {tuple(cond.shape)}")
        out = cond
        if self.embedding is not None:
            emb = self.embedding(iteration, batch_size)  # type: ignore[arg-type]
            out = emb if out is None else out + emb
        return out

    @staticmethod
    def _encode(block: nn.Module, x: torch.Tensor, cond: torch.Tensor | None, pool: bool) -> torch.Tensor:
        return block(max_pool(x) if pool else x, cond)

    @staticmethod
    def _decode(
        up: nn.Module, block: nn.Module, x: torch.Tensor, skip: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        return block(torch.cat((up(x), skip), 1), cond)

    def _run(self, function: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        # With checkpointing, pooling / up-sampling / concatenation are recomputed together with
        # their block, so only the block inputs and the skip tensors stay in memory.
        if self.checkpoint and torch.is_grad_enabled():
            return _checkpoint(function, *args, use_reentrant=False)
        return function(*args)

    def forward(
        self,
        x: torch.Tensor,
        iteration: int | torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the U-Net.

        Parameters
        ----------
        x
            ``(B, in_channels, Y, X)`` ("2d") or ``(B, in_channels, T, Y, X)`` ("2.5d"), real.
        iteration
            Iteration index, ``int`` or ``(B,)`` integer tensor (networks with an embedding only).
        cond
            Conditioning vector ``(B, cond_dim)`` (networks built with ``cond_dim`` only).

        Returns
        -------
        ``(B, out_channels, [T,] Y, X)``.
        """
        ndim = 4 if self.layout == "2d" else 5
        axes = "(B, C, Y, X)" if ndim == 4 else "(B, C, T, Y, X)"
        if x.ndim != ndim or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape {axes} with C = {self.in_channels}; got {tuple(x.shape)}")
        c = self._conditioning(x.shape[0], iteration, cond)
        ny, nx = x.shape[-2:]
        multiple = 2 ** (len(self.features) - 1)
        pad_y, pad_x = -ny % multiple, -nx % multiple
        if pad_y or pad_x:
            pad = (0, pad_x, 0, pad_y) + ((0, 0) if ndim == 5 else ())
            x = F.pad(x, pad, mode="replicate")
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = x.device.type == "cpu" and not torch.is_grad_enabled()
        if channels_last:
            x = to_channels_last(x)

        skips = []
        for level, block in enumerate(self.encoder):
            x = self._run(self._encode, block, x, c, level > 0)
            skips.append(x)
        skips.pop()
        for up, block in zip(reversed(self.upsample), reversed(self.decoder)):
            x = self._run(self._decode, up, block, x, skips.pop(), c)
        out = self.head(x)
        out = out[..., :ny, :nx] if (pad_y or pad_x) else out
        return out.contiguous() if channels_last else out
