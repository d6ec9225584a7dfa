"""``FactorisedConv3d``: the 2.5-D U-Net's (1, k, k) and (k, 1, 1) convolutions, computed with ``conv2d``.

PyTorch's CPU ``conv3d`` falls back to a slow generic kernel for these kernel shapes (one
16-channel 5x192² convolution, forward+backward: 0.49 s as ``conv3d`` vs 0.06 s as ``conv2d``; the
temporal one 0.19 s vs 0.02 s), so the layer keeps ``Conv3d``'s weights and state dict but
computes with 2-D convolutions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FactorisedConv3d"]


class FactorisedConv3d(nn.Conv3d):
    """A ``Conv3d`` with kernel ``(1, k, k)`` or ``(k, 1, 1)``, computed as a 2-D convolution.

    Same parameters, state-dict entries and result as ``nn.Conv3d`` (stride 1, no dilation, one
    group, zero padding), on input ``(B, C, T, Y, X)``:

    * ``(1, k, k)``: the ``T`` images are moved into the batch, ``(B·T, C, Y, X)`` (``k = 1`` needs
      no copy: ``(B, C, T·Y, X)`` is a view);
    * ``(k, 1, 1)``: a ``(k, 1)`` convolution on the view ``(B, C, T, Y·X)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kt, ky, kx = self.kernel_size
        if not (kt == 1 or ky == kx == 1) or self.stride != (1, 1, 1) or self.dilation != (1, 1, 1) \
                or self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError(
                "FactorisedConv3d needs a (1, k, k) or (k, 1, 1) kernel, stride 1, no dilation, one group and "
                f"numeric zero padding; got kernel {self.kernel_size}, stride {self.stride}, dilation "
                f"{self.dilation}, groups {self.groups}, padding {self.padding!r} ({self.padding_mode})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected (B, C, T, Y, X) input; got shape {tuple(x.shape)}")
        b, c, t, ny, nx = x.shape
        kt, ky, kx = self.kernel_size
        if ky == kx == 1:  # temporal or 1x1x1: a view suffices
            out = F.conv2d(x.reshape(b, c, t, ny * nx), self.weight[..., 0], self.bias, padding=(self.padding[0], 0))
            return out.view(b, -1, t, ny, nx)
        images = x.transpose(1, 2).reshape(b * t, c, ny, nx)
        out = F.conv2d(images, self.weight[:, :, 0], self.bias, padding=self.padding[1:])
        return out.view(b, t, -1, ny, nx).transpose(1, 2).contiguous()
