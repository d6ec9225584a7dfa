"""Part 3 of ``benchmarks.w2q`` (``benchmarks.w2q_calibration``); the MAP itself is tested in tests/pinqi/w2q."""

from __future__ import annotations

import torch

from benchmarks.w2q_calibration import slice_dependence
from pinqi.w2q.config import W2QConfig
from pinqi.w2q.model import W2Q


def test_slice_dependence_reports_every_slice_with_white_matter() -> None:
    torch.manual_seed(0)
    model = W2Q(W2QConfig(n_iterations=1, features=(8, 16), embed_dim=8, group_size=4, fit_max_iter=2,
                          protocol_version=2))
    rows = slice_dependence(model, n_slices=3, size=32)
    assert rows and all(n > 0 and t1 > 0 and 0.5 < ideal < 1.5 for _, n, t1, ideal in rows)


def test_generator_bias_of_a_constant_map() -> None:
    """A "model" that always returns WM T1 = 1.2 × 0.85 s reads about +20 % (the generator's smooth T1
    factors move the truth by up to ±10 %), per slice and pixel-weighted."""
    from types import SimpleNamespace

    from benchmarks.w2q_calibration import generator_bias
    from pinqi.w2q.config import load_w2q_config

    def constant(images, seq, types, mask):  # noqa: ANN001, ANN202
        p = torch.ones(images.shape[0], 3, *images.shape[-2:]) * torch.tensor([0.7, 1.02, 0.07]).view(1, 3, 1, 1)
        return SimpleNamespace(final=p)

    out = generator_bias(constant, load_w2q_config("micro").replace(image_size=32), n_samples=6)
    assert out["slices"] > 0
    assert 8 < out["per-slice mean %"] < 32 and 8 < out["pixel-weighted %"] < 32
