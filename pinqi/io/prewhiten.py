"""Noise prewhitening from noise-only scans (coil decorrelation and unit noise variance)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["noise_covariance", "whitening_matrix"]


def noise_covariance(noise: Sequence[np.ndarray], source: str) -> tuple[np.ndarray, int]:
    """Sample covariance of zero-mean receiver noise.

    Parameters
    ----------
    noise
        Noise scans, each ``(C, N_i)`` complex (coils, samples).
    source
        File name for error messages.

    Returns
    -------
    ``(C, C)`` complex128 covariance ``Σ = (1/N) Σ_n n nᴴ`` (no mean removed: receiver noise is
    zero-mean) and the number of samples N.
    """
    stacked = np.concatenate([np.asarray(n, dtype=np.complex128) for n in noise], axis=1)
    n_coils, n_samples = stacked.shape
    if not np.all(np.isfinite(stacked.view(np.float64))):
        raise ValueError(f"{source}: expected finite noise scans; got NaN/Inf samples")
    if n_samples < n_coils:
        raise ValueError(f"{source}: expected at least as many noise samples as coils ({n_coils}) to "
                         f"estimate the noise covariance; got {n_samples}")
    return stacked @ stacked.conj().T / n_samples, n_samples


def whitening_matrix(cov: np.ndarray, source: str, dwell_ratio: float = 1.0) -> np.ndarray:
    """Matrix W with ``W Σ Wᴴ = dwell_ratio · I``, applied to the coil axis of the data.

    Parameters
    ----------
    cov
        ``(C, C)`` Hermitian positive-definite noise covariance from the noise scans.
    source
        File name for error messages.
    dwell_ratio
        ``acquisition dwell time / noise dwell time``. Noise variance per sample is proportional
        to the receiver bandwidth, i.e. inversely to the dwell time, so the imaging data carry
        ``Σ / dwell_ratio``; scaling ``W = L⁻¹`` by ``sqrt(dwell_ratio)`` gives them unit noise
        variance per coil and sample.

    Returns
    -------
    ``(C, C)`` complex128 lower-triangular ``sqrt(dwell_ratio) · L⁻¹`` with ``Σ = L Lᴴ``.
    """
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"{source}: expected a positive-definite noise covariance from the noise scans; "
                         f"got a singular one (eigenvalues {np.linalg.eigvalsh(cov).round(12).tolist()})") from exc
    eye = np.eye(cov.shape[0], dtype=np.complex128)
    return np.sqrt(dwell_ratio) * np.linalg.solve(chol, eye)
