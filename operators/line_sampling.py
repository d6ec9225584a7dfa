"""Fast forward model for simulation: multi-coil k-space of the sampled phase-encode lines only.

``MultiCoilCartesianOp(csm, mask)(images)`` transforms every line and then zeroes the unsampled
ones. When the mask consists of whole phase-encode lines (constant along ``X``), only about ``1/R``
of the rows need the FFT along ``X``: :class:`LineSampler` builds the coil images in a
``(T, C, X, Y)`` layout so that the FFT along ``Y`` runs over contiguous rows, gathers the sampled
``k_y`` lines, and transforms those alone along ``X``. The centring shifts of the centred
orthonormal FFT (:mod:`operators.fft`) are folded into ``±1`` checkerboards, which is exact for
even sizes: ``F_c(x) = (−1)^(k_y − Y/2 + k_x − X/2) · F((−1)^(y + x) · x)``.

The result equals ``MultiCoilCartesianOp(csm[None], mask[None])(images[None])[0]`` on the sampled
lines up to float rounding (tested); the dataset adds its noise to the returned lines only.
"""

from __future__ import annotations

import torch

__all__ = ["LineSampler"]


def _checkerboard(ny: int, nx: int, dtype: torch.dtype) -> torch.Tensor:
    return (1.0 - 2.0 * ((torch.arange(ny)[:, None] + torch.arange(nx)[None, :]) % 2)).to(dtype)


class LineSampler:
    """Multi-coil Cartesian k-space of whole sampled lines, for one image size.

    Parameters
    ----------
    shape
        ``(Y, X)``, both even (:meth:`applies` says whether a mask can use this path).
    dtype
        Real dtype of the checkerboards (float32 for complex64 images).
    """

    def __init__(self, shape: tuple[int, int], dtype: torch.dtype = torch.float32) -> None:
        ny, nx = int(shape[0]), int(shape[1])
        self.shape = (ny, nx)
        self.even = ny % 2 == 0 and nx % 2 == 0
        chk = _checkerboard(ny, nx, dtype)
        self._chk_in = chk
        self._chk_out = chk * (-1.0) ** ((ny + nx) // 2)

    def applies(self, mask: torch.Tensor) -> bool:
        """Whether ``mask`` ``(T, Y, X)`` is made of whole lines and the size is even."""
        lines = mask.any(-1)
        return self.even and bool((mask == lines[..., None]).all())

    def __call__(self, images: torch.Tensor, csm: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampled lines of ``FFT(csm · images)``.

        Parameters
        ----------
        images
            ``(T, Y, X)`` complex.
        csm
            ``(C, Y, X)`` complex coil maps.
        mask
            ``(T, Y, X)`` bool of whole lines (:meth:`applies`).

        Returns
        -------
        ``(L, C, X)`` the L sampled lines (in ``mask.any(-1).nonzero()`` order) and ``lines``
        ``(T, Y)`` bool.
        """
        t, ny, nx = images.shape
        c = csm.shape[0]
        lines = mask.any(-1)
        coil_images = torch.empty((t, c, nx, ny), dtype=images.dtype)
        torch.mul((images * self._chk_in).transpose(-1, -2)[:, None], csm.transpose(-1, -2)[None], out=coil_images)
        along_y = torch.fft.fft(coil_images, dim=-1, norm="ortho").permute(0, 3, 1, 2)  # (T, KY, C, X) view
        sampled = torch.fft.fft(along_y[lines], dim=-1, norm="ortho")  # (L, C, KX)
        sampled.mul_(self._chk_out[lines.nonzero()[:, 1]][:, None, :])
        return sampled, lines

    @staticmethod
    def scatter(sampled: torch.Tensor, lines: torch.Tensor, n_coils: int, shape: tuple[int, int]) -> torch.Tensor:
        """Place ``(L, C, X)`` lines into a zero ``(T, C, Y, X)`` k-space."""
        k = torch.zeros((lines.shape[0], n_coils, *shape), dtype=sampled.dtype)
        k.transpose(1, 2)[lines] = sampled
        return k
