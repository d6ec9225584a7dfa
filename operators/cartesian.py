"""Multi-coil Cartesian encoding ``A = M F S``: coil maps, centred orthonormal 2-D FFT, mask.

Shapes: image series ``x (*b, T, Y, X)``, coil maps ``csm (*b, C, Y, X)``, k-space
``(*b, T, C, Y, X)`` on the full grid (zeros where not sampled), mask ``(*b, T, Y, X)`` or
broadcastable to it (e.g. ``(T, Y, X)``, ``(B, T, Y, 1)``, ``(1, T, Y, X)``, ``(B, 1, Y, X)``).
The FFT is the centred one of :mod:`operators.fft`.

Fast normal operator
--------------------
``AᴴA x = Σ_C conj(csm) · IFFT(M · FFT(csm · x))``. Two exact simplifications:

* Shifts fold into the mask. With ``FFT = S F S⁻¹`` (``S`` = fftshift, ``F`` = plain orthonormal
  FFT) the k-space part of the gram is ``S F⁻¹ S⁻¹ M S F S⁻¹ = S F⁻¹ M' F S⁻¹`` with
  ``M' = ifftshift(M)``. A roll in image space is a diagonal phase in k-space
  (``F S = P F``), which commutes with the diagonal ``M'``; so this equals ``F⁻¹ M' F``: no
  shift at all, for even and odd sizes.
* When the mask is constant along X (1-D undersampling along the phase-encode axis Y, detected
  once at construction) the X-direction FFT pair cancels: only 1-D FFTs along Y remain. They
  run on a ``(…, X, Y)`` layout so that each transform is over contiguous memory.

``gram_full`` always evaluates the 2-D path (used by tests and the benchmark). Both paths work
through the batch in groups of samples of about ``CHUNK_ELEMENTS`` coil-image elements, so that
the intermediate coil images stay cache-sized; they use an unscaled FFT and a ``1/N`` inverse
(the orthonormal pair's product without its two scaling passes) and, when no autograd graph is
needed, apply the mask and coil weights in place with cached coil-map layouts.
"""

from __future__ import annotations

import math

import torch

from operators._validation import (
    require_batch_broadcast,
    require_finite,
    require_min_ndim,
    require_nonzero,
    shape_str,
)
from operators.linear_operator import LinearOperator
from operators.sampling_operator import check_mask
from operators.sensitivity import check_coil_kspace, check_csm, check_image, coil_combine

_YX = (-2, -1)


class MultiCoilCartesianOp(LinearOperator):
    """Multi-coil Cartesian MRI encoding operator.

    Parameters
    ----------
    csm
        Complex coil maps ``(*b, C, Y, X)`` (typically ``(B, C, Y, X)``). Gradients reach them
        through autograd. Images and k-space must have the dtype of ``csm``.
    mask
        Sampling mask ``(*b, T, Y, X)`` or broadcastable to it, bool or real with values in
        ``[0, 1]``: each of its last three dims is 1 or equal to ``T``/``Y``/``X``.
    fast_gram
        Use the 1-D phase-encode gram when the mask is constant along X (default). ``False``
        forces the 2-D path in :meth:`gram`.

    Notes
    -----
    forward: ``x (*b, T, Y, X) -> mask · FFT2(csm · x)``, ``(*b, T, C, Y, X)``;
    adjoint: ``k (*b, T, C, Y, X) -> Σ_C conj(csm) · IFFT2(mask · k)``, ``(*b, T, Y, X)``.
    """

    def __init__(self, csm: torch.Tensor, mask: torch.Tensor, fast_gram: bool = True) -> None:
        super().__init__()
        csm = check_csm(csm)
        mask, binary = check_mask("mask", mask)
        require_min_ndim("mask", mask, 3, "(*b, T, Y, X) or broadcastable")
        require_nonzero("mask", mask, 3, "a mask that samples nothing measures no data")
        y, x = csm.shape[-2:]
        if mask.shape[-2] not in (1, y) or mask.shape[-1] not in (1, x):
            raise ValueError(
                f"mask must have shape (*b, T, Y, X) (or size 1 in Y/X) with Y, X = {(y, x)} of "
                f"the coil maps; got {shape_str(mask.shape)}"
            )
        try:
            torch.broadcast_shapes(mask.shape[:-3], csm.shape[:-3])
        except RuntimeError:
            raise ValueError(
                f"the batch dims {shape_str(mask.shape[:-3])} of the mask do not broadcast with "
                f"the batch dims {shape_str(csm.shape[:-3])} of the coil maps"
            ) from None
        self.csm = csm
        self.mask = mask.to(device=csm.device, dtype=csm.real.dtype)
        self.binary = binary
        self.fast_gram = bool(fast_gram)
        with torch.no_grad():
            self.mask_is_1d = bool(mask.shape[-1] == 1 or (mask == mask[..., :1]).all())
        self._weight_cache: dict[bool, torch.Tensor] = {}
        self._csm_cache: dict[bool, tuple[tuple[bool, int, int], torch.Tensor, torch.Tensor]] = {}

    @property
    def uses_fast_gram(self) -> bool:
        """Whether :meth:`gram` takes the 1-D phase-encode path."""
        return self.fast_gram and self.mask_is_1d

    def extra_repr(self) -> str:
        return (f"csm={tuple(self.csm.shape)}, mask={tuple(self.mask.shape)}, "
                f"mask_is_1d={self.mask_is_1d}, fast_gram={self.fast_gram}")

    # ----------------------------------------------------------------- validation
    def _check_mask_against(self, name: str, t_size: int, batch: torch.Size) -> None:
        t_mask = self.mask.shape[-3]
        if t_mask not in (1, t_size):
            raise ValueError(
                f"{name} has T = {t_size} contrasts but the mask {shape_str(self.mask.shape)} has "
                f"T = {t_mask}; the mask must have shape (*b, T, Y, X) with T = {t_size} (or 1)"
            )
        require_batch_broadcast("mask", self.mask.shape[:-3], name, batch)

    def _check_x(self, x: object) -> torch.Tensor:
        x = check_image(x, self.csm)
        self._check_mask_against("x", x.shape[-3], x.shape[:-3])
        return x

    # ----------------------------------------------------------------- operator
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """k-space ``(*b, T, C, Y, X)`` of the image series ``x (*b, T, Y, X)``."""
        x = require_finite("x", self._check_x(x))
        # ifftshift(csm · x) = ifftshift(csm) · ifftshift(x): roll the small tensors only.
        csm = torch.fft.ifftshift(self.csm, dim=_YX)
        z = csm.unsqueeze(-4) * torch.fft.ifftshift(x, dim=_YX).unsqueeze(-3)
        k = torch.fft.fftshift(torch.fft.fft2(z, norm="ortho"), dim=_YX)
        return k * self.mask.unsqueeze(-3)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Coil-combined image ``(*b, T, Y, X)`` of k-space ``y (*b, T, C, Y, X)``."""
        y = require_finite("y", check_coil_kspace(y, self.csm, "y"))
        self._check_mask_against("y", y.shape[-4], y.shape[:-4])
        k = torch.fft.ifftshift(y * self.mask.unsqueeze(-3), dim=_YX)
        z = torch.fft.ifft2(k, norm="ortho")
        # Σ conj(csm) · fftshift(z) = fftshift(Σ conj(ifftshift(csm)) · z): shift the result only.
        csm = torch.fft.ifftshift(self.csm, dim=_YX)
        return torch.fft.fftshift(coil_combine(csm, z), dim=_YX)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``AᴴA x`` ``(*b, T, Y, X)``: 1-D FFTs along Y when :attr:`uses_fast_gram`, else 2-D."""
        return self._gram(self._check_x(x), self.uses_fast_gram)

    def gram_full(self, x: torch.Tensor) -> torch.Tensor:
        """``AᴴA x`` by the 2-D path regardless of the mask (reference and benchmark)."""
        return self._gram(self._check_x(x), False)

    # ----------------------------------------------------------------- gram internals
    def _gram_weight(self, one_d: bool) -> torch.Tensor:
        """The k-space weight of the gram with the shifts folded in.

        Returns ``ifftshift(mask²)`` as ``(*b, T, 1, 1, Y)`` (1-D path, transposed layout) or
        ``(*b, T, 1, Y, X|1)`` (2-D path). Cached unless the mask requires grad.
        """
        cached = self._weight_cache.get(one_d)
        if cached is not None:
            return cached
        w = self.mask if self.binary else self.mask * self.mask
        if one_d:
            w = torch.fft.ifftshift(w[..., :1], dim=-2).transpose(-1, -2)
        else:
            w = torch.fft.ifftshift(w, dim=_YX)
        w = w.unsqueeze(-3)
        if not self.mask.requires_grad:
            self._weight_cache[one_d] = w
        return w

    def _csm_layouts(self, one_d: bool, graph: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Coil maps on the layout of the gram path (``(*b, C, X, Y)`` for the 1-D path) and,
        when no autograd graph is needed, their resolved conjugate; both cached then (keyed on
        the coil maps' version, so in-place changes are seen)."""
        if graph:
            return (self.csm.transpose(-1, -2).contiguous() if one_d else self.csm), None
        key = (one_d, self.csm._version, self.csm.data_ptr())
        cached = self._csm_cache.get(one_d)
        if cached is None or cached[0] != key:
            csm = self.csm.detach()
            csm = csm.transpose(-1, -2).contiguous() if one_d else csm
            cached = (key, csm, csm.conj().resolve_conj())
            self._csm_cache[one_d] = cached
        return cached[1], cached[2]

    def _gram(self, x: torch.Tensor, one_d: bool) -> torch.Tensor:
        """``AᴴA x`` for a validated ``x (*b, T, Y, X)``, evaluated in groups of samples.

        The batch is processed in groups of about :data:`CHUNK_ELEMENTS` coil-image elements
        (at least one sample): the intermediate coil images then stay in the CPU cache and
        fresh allocations stay small, which is faster than one pass over a large batch.
        """
        batch, n_t = x.shape[:-3], x.shape[-3]
        n = math.prod(batch)
        if n == 0 or x.numel() == 0:
            return torch.zeros_like(x)
        w = self._gram_weight(one_d)
        graph = torch.is_grad_enabled() and (
            x.requires_grad or self.csm.requires_grad or w.requires_grad)
        csm, csm_conj = self._csm_layouts(one_d, graph)
        csm = _flatten_batch(csm, batch, 3)
        csm_conj = None if csm_conj is None else _flatten_batch(csm_conj, batch, 3)
        w = _flatten_batch(w, batch, 4)
        xs = x.reshape(n, n_t, *x.shape[-2:])
        if one_d:  # (…, X, Y) layout: the Y transforms then run over contiguous memory.
            xs = xs.transpose(-1, -2)
        group = max(1, CHUNK_ELEMENTS // (n_t * csm[0].numel()))
        block = _gram_block_1d if one_d else _gram_block_2d
        outs = [block(csm[i:i + group], None if csm_conj is None else csm_conj[i:i + group],
                      xs[i:i + group], w[i:i + group]) for i in range(0, n, group)]
        if one_d:
            outs = [o.transpose(-1, -2) for o in outs]
        out = outs[0].contiguous() if len(outs) == 1 else torch.cat(outs)
        return out.reshape(x.shape)


CHUNK_ELEMENTS = 1 << 22
"""Coil-image elements per group of samples in :meth:`MultiCoilCartesianOp.gram` (32 MiB in
complex64; measured on a 2-core CPU with 32 MiB L3: groups of 1-2 paper-size samples are about
3x faster than one pass over a batch of 8)."""


def _flatten_batch(t: torch.Tensor, batch: torch.Size, n_trailing: int) -> torch.Tensor:
    """Broadcast the batch dims of ``t`` to ``batch`` and flatten them into one leading dim."""
    trailing = t.shape[t.ndim - n_trailing:]
    return t.expand(*batch, *trailing).reshape(-1, *trailing)


def _gram_block_1d(csm_t: torch.Tensor, csm_t_conj: torch.Tensor | None, x_t: torch.Tensor,
                   w: torch.Tensor) -> torch.Tensor:
    """1-D gram on the transposed layout: ``csm_t (n, C, X, Y)``, ``x_t (n, T, X, Y)`` (any
    strides), ``w (n, T|1, 1, 1, Y)`` -> ``(n, T, X, Y)``.

    ``csm_t_conj`` is the resolved ``conj(csm_t)``, given when no autograd graph is needed: the
    mask and coil weights are then applied in place. The pair ``fft`` (unscaled) / ``ifft``
    (``1/Y``) equals the orthonormal pair and skips a scaling pass.
    """
    k = torch.fft.fft(csm_t.unsqueeze(1) * x_t.contiguous().unsqueeze(2), dim=-1)
    if csm_t_conj is None:
        return coil_combine(csm_t, torch.fft.ifft(_apply_weight(k, w), dim=-1))
    r = torch.fft.ifft(k.mul_(w), dim=-1)
    return r.mul_(csm_t_conj.unsqueeze(1)).sum(2)


def _gram_block_2d(csm: torch.Tensor, csm_conj: torch.Tensor | None, x: torch.Tensor,
                   w: torch.Tensor) -> torch.Tensor:
    """2-D gram: ``csm (n, C, Y, X)``, ``x (n, T, Y, X)``, ``w (n, T|1, 1, Y, X|1)`` ->
    ``(n, T, Y, X)``; ``csm_conj`` and the FFT scaling as in :func:`_gram_block_1d`."""
    k = torch.fft.fft2(csm.unsqueeze(1) * x.unsqueeze(2))
    if csm_conj is None:
        return coil_combine(csm, torch.fft.ifft2(_apply_weight(k, w)))
    r = torch.fft.ifft2(k.mul_(w))
    return r.mul_(csm_conj.unsqueeze(1)).sum(2)


def _apply_weight(k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``k · w``, in place when autograd does not need the pre-multiplication ``k``.

    The FFT's backward does not use its output, so overwriting ``k`` is safe unless ``w``
    itself requires grad (a learned mask).
    """
    if w.requires_grad and torch.is_grad_enabled():
        return k * w
    return k.mul_(w)
