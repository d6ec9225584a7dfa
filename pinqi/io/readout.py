"""Readout placement on the centred grid, and readout oversampling (add / remove).

The grid convention is :mod:`operators.fft`'s: k = 0 sits at index ``N // 2``. Oversampling is
changed in image space along the readout with the project's centred orthonormal FFT: the image of
length ``N`` sits at indices ``[M // 2 - N // 2, M // 2 - N // 2 + N)`` of the image of length
``M``, so :func:`remove_readout_oversampling` exactly inverts :func:`add_readout_oversampling`.
"""

from __future__ import annotations

import numpy as np
import torch

from operators.fft import centered_fft, centered_ifft

__all__ = ["place_readout", "add_readout_oversampling", "remove_readout_oversampling"]


def place_readout(data: np.ndarray, center_sample: int, discard_pre: int, discard_post: int,
                  n_x: int, where: str) -> np.ndarray:
    """Put one acquired line on the ``n_x`` grid with its centre sample at ``n_x // 2``.

    Parameters
    ----------
    data
        ``(C, Ns)`` complex samples of one acquisition.
    center_sample
        ISMRMRD ``center_sample``: the index in ``data`` of k_x = 0.
    discard_pre, discard_post
        Samples to drop at the start / end (ISMRMRD ``discard_pre`` / ``discard_post``).
    n_x
        Grid length (``encodedSpace.matrixSize.x``).
    where
        Description of the acquisition for error messages.

    Returns
    -------
    ``(C, n_x)`` complex128, zero where the line has no sample (e.g. partial echo).
    """
    n_samples = data.shape[1]
    keep = np.arange(discard_pre, n_samples - discard_post)
    target = keep - center_sample + n_x // 2
    if keep.size == 0:
        raise ValueError(f"{where}: expected samples left after discard_pre/discard_post; got none")
    if target[0] < 0 or target[-1] >= n_x:
        raise ValueError(f"{where}: expected samples {keep[0]}..{keep[-1]} with center_sample {center_sample} "
                         f"to fit the encoded readout of {n_x} (centre {n_x // 2}); they span grid "
                         f"{target[0]}..{target[-1]}")
    out = np.zeros((data.shape[0], n_x), dtype=np.complex128)
    out[:, target] = data[:, keep]
    return out


def _check_lengths(n_small: int, n_large: int) -> int:
    if not 0 < n_small <= n_large:
        raise ValueError(f"expected 0 < recon readout ({n_small}) <= encoded readout ({n_large})")
    return n_large // 2 - n_small // 2


def remove_readout_oversampling(kspace: torch.Tensor, n_x: int) -> torch.Tensor:
    """Crop the readout field of view: centred IFFT along the last axis, keep the centre, FFT back.

    Parameters
    ----------
    kspace
        ``(..., M)`` complex k-space, M encoded readout samples.
    n_x
        Readout length after removal (``reconSpace.matrixSize.x``), ``<= M``.

    Returns
    -------
    ``(..., n_x)`` complex k-space of the central ``n_x`` image columns.
    """
    start = _check_lengths(n_x, kspace.shape[-1])
    image = centered_ifft(kspace, dims=(-1,))
    return centered_fft(image[..., start:start + n_x], dims=(-1,))


def add_readout_oversampling(kspace: torch.Tensor, n_x: int) -> torch.Tensor:
    """Extend the readout field of view by zero-padding in image space (inverse of the removal).

    Parameters
    ----------
    kspace
        ``(..., N)`` complex k-space.
    n_x
        Oversampled readout length M ``>= N``.

    Returns
    -------
    ``(..., M)`` complex k-space.
    """
    start = _check_lengths(kspace.shape[-1], n_x)
    image = centered_ifft(kspace, dims=(-1,))
    padded = image.new_zeros((*image.shape[:-1], n_x))
    padded[..., start:start + image.shape[-1]] = image
    return centered_fft(padded, dims=(-1,))
