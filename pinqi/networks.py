"""The PINQI regularising networks: a conditioned residual U-Net, ``P_θ`` and ``Y_θ``.

Architecture (paper, section III-B; building blocks and their choices in :mod:`pinqi.common.unet`)
* One residual block per level: two 3x3 convolutions, each followed by GroupNorm (16 channels per
  group) and SiLU, FiLM after the first convolution's norm, a 1x1 convolution on the skip path when
  the channel count changes, and a ReZero-like gate (1e-3 at start) on the convolutional path.
* ``features = (f0, ..., fL)``, the last level being the bottleneck: encoder blocks ``in -> f0``,
  ``f(l-1) -> fl`` after 2x2 max-pooling (stride 2); decoder: 2x bilinear up-sampling and a 3x3
  convolution ``f(l+1) -> f(l+1)``, concatenation with the skip, a block ``fl + f(l+1) -> fl``; a
  final 1x1 convolution ``f0 -> out``. FiLM in every encoder (bottleneck included) and decoder block.
* ``Y, X`` not multiples of ``2**L`` are replicate-padded (bottom/right) and cropped back.
* ``P_θ`` (:class:`ParameterNet`): 2-D, input the real and imaginary parts of the ``T`` images
  (``2T`` channels), features (32, 64, 96, 128, 128), bounded output head. ``Y_θ``
  (:class:`ImageNet`): 2.5-D (per-image spatial convolutions plus a temporal convolution along
  ``T`` in every block), 2 channels (real, imaginary), features (16, 32, 48, 64, 64), residual.

Reading of the paper. It lists four feature counts per network, (32, 64, 96, 128) and
(16, 32, 48, 64), and 2,235,308 / 597,323 weights. Those counts are reproduced exactly by a U-Net
with four down-sampling steps whose bottleneck repeats the last count, up-sampling convolutions
that keep the channel count, and the released code's details (iteration also as an input channel,
no FiLM in the bottleneck, no FiLM at all in ``Y_θ`` -- although the text says both networks are
conditioned -- and the iteration embedding outside the networks); the tests pin both. Defaults here
follow the text instead (FiLM everywhere, learned ``nn.Embedding`` per network):

=======================  ==========  ==========  ================================================
network (T = 5, P = 3)    defaults    paper       with ``film_bottleneck=False``,
                                                  ``iteration_channel=True`` (``Y_θ``: ``film=False``)
=======================  ==========  ==========  ================================================
``P_θ`` ParameterNet      2,252,140   2,235,308   2,235,308 + 512 (its own 8x64 embedding)
``Y_θ`` ImageNet          647,595     597,323     597,323
=======================  ==========  ==========  ================================================

With the four listed counts read literally as four levels (three down-steps) the networks would
have 1,299,690 and 376,169 weights.

Scale: both networks divide the images by a per-sample scale ``s`` = RMS of ``|images|`` over
``(T, Y, X)`` (``normalize=True``; ``s`` is not detached). ``Y_θ`` returns ``images + s·net(images/s)``
and is equivariant to positive rescaling; ``P_θ`` multiplies the parameters in
``scaled_parameters`` (e.g. Re M0, Im M0) by ``s``.

Dtypes: a network computes in its parameters' dtype (``.double()`` for float64); complex input is
cast to the matching complex dtype and the output cast back to the input's (real, for ``P_θ``).

Memory (saved activations of one application, complex64, 192², B = 1, measured with
saved-tensor hooks): ``P_θ`` 159 MiB, ``Y_θ`` 415 MiB; with ``checkpoint=True`` 18 / 41 MiB plus
the recomputed activations of one level during backward. A PINQI step (6 ``P_θ`` + 5 ``Y_θ``
applications, B = 8) therefore needs ``checkpoint=True`` (or checkpointing whole networks) to stay
well under 12 GB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from .common.bounded import BoundedMap
from .common.unet import UNet, iteration_indices

__all__ = ["UNet", "ParameterNet", "ImageNet"]


def _complex_dtype(real: torch.dtype) -> torch.dtype:
    if real not in (torch.float32, torch.float64):
        raise TypeError(f"the network's parameters must be float32 or float64; got {real}")
    return torch.complex64 if real == torch.float32 else torch.complex128


def _check_images(images: torch.Tensor, n_times: int | None = None) -> None:
    if not isinstance(images, torch.Tensor) or not images.is_complex():
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be a complex tensor (B, T, Y, X); got {got}")
    if images.ndim != 4 or (n_times is not None and images.shape[1] != n_times):
        expected = "T" if n_times is None else f"T = {n_times}"
        raise ValueError(f"images must have shape (B, T, Y, X) with {expected}; got {tuple(images.shape)}")


class _ImageConditionedNet(nn.Module):
    """Shared input handling of ``P_θ`` and ``Y_θ``: dtype, scale, iteration index."""

    unet: UNet

    def __init__(self, max_iterations: int, normalize: bool, film: bool, iteration_channel: bool) -> None:
        super().__init__()
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be positive; got {max_iterations}")
        self.max_iterations, self.normalize = max_iterations, normalize
        self.film, self.iteration_channel = film, iteration_channel

    def _prepare(
        self, images: torch.Tensor, iteration: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Images in the network's complex dtype divided by the scale, the scale, (B,) indices."""
        real_dtype = self.unet.head.weight.dtype
        x = images.to(_complex_dtype(real_dtype))
        index = iteration_indices(iteration, images.shape[0], self.max_iterations).to(images.device)
        if not self.normalize:
            return x, None, index
        # Per-sample RMS of |images| over (T, Y, X), (B, 1, 1, 1); clamped so zero images pass.
        power = (x.real.square() + x.imag.square()).mean(dim=(1, 2, 3), keepdim=True)
        scale = power.clamp_min(torch.finfo(real_dtype).tiny).sqrt()
        return x / scale, scale, index

    def _with_iteration_channel(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if not self.iteration_channel:
            return x
        value = (index.to(x.dtype) / self.max_iterations).view(-1, *(1,) * (x.ndim - 1))
        return torch.cat((x, value.expand(x.shape[0], 1, *x.shape[2:])), 1)


class ParameterNet(_ImageConditionedNet):
    """``P_θ``: 2-D U-Net from the ``T`` images to ``P`` parameter maps through a bounded head.

    Parameters
    ----------
    n_times
        ``T``, the number of images (input channels ``2T``: channel ``2t`` is the real and ``2t+1``
        the imaginary part of image ``t``).
    n_parameters
        ``P``.
    bounds
        ``(lower, upper)``, each ``P`` floats (``±inf`` allowed), e.g. a signal model's ``bounds``
        or narrower plausible bounds. Per parameter the head maps the raw network output ``r`` to
        ``l + (u-l)·sigmoid(r)`` (both finite), ``l + softplus(r)`` (only ``l`` finite),
        ``u - softplus(-r)`` (only ``u``), or ``r``. ``None``: no bounds.
    initial_value
        ``P`` values the head returns while the final 1x1 convolution's weights are zero (its bias
        is set accordingly); ``None``: the midpoint of finite bounds, ``l + log 2`` / ``u - log 2``
        for one-sided bounds, 0 for none.
    scaled_parameters
        Indices of parameters that scale with the image intensity (Re M0, Im M0 or PD). Their head
        output is multiplied by the per-sample input scale ``s`` (module docstring), so their
        bounds and initial values are in units of ``s``. Empty (default): all bounds are absolute.
    features, embed_dim, group_size, norm_groups, gate_init, film_bottleneck, checkpoint
        See :class:`UNet`.
    max_iterations
        Number of iteration indices ``forward`` accepts (and embeds).
    normalize
        Divide the input by the per-sample RMS scale ``s`` (else ``s = 1``).
    film
        Condition on the iteration by FiLM (else the iteration only enters through
        ``iteration_channel``, if set).
    iteration_channel
        Append a constant input channel ``iteration / max_iterations`` (as the released PINQI code).
    head_std
        Standard deviation of the final 1x1 convolution's initial weights.
    """

    def __init__(
        self,
        n_times: int,
        n_parameters: int,
        bounds: tuple[Sequence[float], Sequence[float]] | None = None,
        initial_value: Sequence[float] | None = None,
        scaled_parameters: Sequence[int] = (),
        features: Sequence[int] = (32, 64, 96, 128, 128),
        max_iterations: int = 8,
        embed_dim: int = 64,
        group_size: int = 16,
        norm_groups: int | None = None,
        gate_init: float = 1e-3,
        film_bottleneck: bool = True,
        normalize: bool = True,
        film: bool = True,
        iteration_channel: bool = False,
        checkpoint: bool = False,
        head_std: float = 0.01,
    ) -> None:
        super().__init__(max_iterations, normalize, film, iteration_channel)
        if n_times < 1 or n_parameters < 1:
            raise ValueError(f"n_times and n_parameters must be positive; got {n_times}, {n_parameters}")
        inf = math.inf
        lower, upper = ([-inf] * n_parameters, [inf] * n_parameters) if bounds is None else bounds
        lower, upper = [float(v) for v in lower], [float(v) for v in upper]
        if len(lower) != n_parameters or len(upper) != n_parameters:
            raise ValueError(
                f"bounds must be two sequences of {n_parameters} floats; got {len(lower)} and {len(upper)}"
            )
        if any(not lo < hi for lo, hi in zip(lower, upper)):
            raise ValueError(f"every lower bound must be below its upper bound; got {lower}, {upper}")
        scaled = sorted({int(i) for i in scaled_parameters})
        if scaled and not 0 <= scaled[0] <= scaled[-1] < n_parameters:
            raise ValueError(f"scaled_parameters must be indices in [0, {n_parameters}); got {list(scaled_parameters)}")
        self.n_times, self.n_parameters = n_times, n_parameters
        self.lower, self.upper, self.scaled_parameters = lower, upper, tuple(scaled)
        self.head_map = BoundedMap(lower, upper)
        self.unet = UNet(
            2 * n_times + int(iteration_channel), n_parameters, features,
            n_iterations_embed=max_iterations if film else None, embed_dim=embed_dim, layout="2d",
            group_size=group_size, norm_groups=norm_groups, gate_init=gate_init,
            film_bottleneck=film_bottleneck, checkpoint=checkpoint,
        )  # fmt: skip
        nn.init.normal_(self.unet.head.weight, 0.0, head_std)
        with torch.no_grad():
            self.unet.head.bias.copy_(torch.tensor(self._initial_bias(initial_value)))

    def _initial_bias(self, initial_value: Sequence[float] | None) -> list[float]:
        if initial_value is not None and len(initial_value) != self.n_parameters:
            raise ValueError(f"initial_value must have {self.n_parameters} entries; got {len(initial_value)}")
        if initial_value is None:
            return [0.0] * self.n_parameters
        return [self.head_map.raw_value(float(v), i) for i, v in enumerate(initial_value)]

    def _bounded(self, raw: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        maps = self.head_map.columns(raw)
        if scale is not None:
            maps = [m * scale.view(-1, 1, 1) if i in self.scaled_parameters else m for i, m in enumerate(maps)]
        return torch.stack(maps, 1)

    def forward(self, images: torch.Tensor, iteration: int | torch.Tensor) -> torch.Tensor:
        """Predict parameter maps.

        Parameters
        ----------
        images
            ``(B, T, Y, X)`` complex64 or complex128.
        iteration
            Unrolled iteration index in ``[0, max_iterations)``: ``int`` or ``(B,)`` integer tensor.

        Returns
        -------
        ``(B, P, Y, X)`` real, float32 for complex64 input and float64 for complex128.
        """
        _check_images(images, self.n_times)
        x, scale, index = self._prepare(images, iteration)
        x = self._with_iteration_channel(rearrange(torch.view_as_real(x), "b t y x r -> b (t r) y x"), index)
        raw = self.unet(x, iteration=index if self.film else None)
        return self._bounded(raw, scale).to(images.real.dtype)


class ImageNet(_ImageConditionedNet):
    """``Y_θ``: 2.5-D U-Net that predicts a residual correction of the ``T`` complex images.

    ``Y_θ(y) = y + s · net(y / s)`` with ``s`` the per-sample RMS scale (``normalize=True``) and
    ``net`` a 2.5-D :class:`UNet` (``layout="2.5d"``) on ``(B, 2, T, Y, X)`` real/imaginary channels.
    Works for any ``T``. At initialisation (small head weights, gates 1e-3) ``Y_θ`` is close to the
    identity.

    Parameters
    ----------
    features, embed_dim, group_size, norm_groups, gate_init, film_bottleneck, checkpoint
        See :class:`UNet`.
    max_iterations, normalize, film, iteration_channel
        See :class:`ParameterNet`.
    head_std
        Standard deviation of the final 1x1 convolution's initial weights (bias 0).
    """

    def __init__(
        self,
        features: Sequence[int] = (16, 32, 48, 64, 64),
        max_iterations: int = 8,
        embed_dim: int = 64,
        group_size: int = 16,
        norm_groups: int | None = None,
        gate_init: float = 1e-3,
        film_bottleneck: bool = True,
        normalize: bool = True,
        film: bool = True,
        iteration_channel: bool = False,
        checkpoint: bool = False,
        head_std: float = 0.01,
    ) -> None:
        super().__init__(max_iterations, normalize, film, iteration_channel)
        self.unet = UNet(
            2 + int(iteration_channel), 2, features, n_iterations_embed=max_iterations if film else None,
            embed_dim=embed_dim, layout="2.5d", group_size=group_size, norm_groups=norm_groups,
            gate_init=gate_init, film_bottleneck=film_bottleneck, checkpoint=checkpoint,
        )  # fmt: skip
        nn.init.normal_(self.unet.head.weight, 0.0, head_std)
        nn.init.zeros_(self.unet.head.bias)

    def forward(self, images: torch.Tensor, iteration: int | torch.Tensor) -> torch.Tensor:
        """Regularised images ``(B, T, Y, X)``, same dtype as ``images`` (complex64/complex128).

        ``iteration``: ``int`` or ``(B,)`` integer tensor in ``[0, max_iterations)``.
        """
        _check_images(images)
        x, scale, index = self._prepare(images, iteration)
        x = self._with_iteration_channel(rearrange(torch.view_as_real(x), "b t y x r -> b r t y x"), index)
        correction = rearrange(self.unet(x, iteration=index if self.film else None), "b r t y x -> b t y x r")
        correction = torch.view_as_complex(correction.contiguous())
        if scale is not None:
            correction = correction * scale
        return images + correction.to(images.dtype)
