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


def test_shipped_w2q_segments_white_matter_for_a_long_te_protocol_over_12_slices() -> None:
    """Regression: with the median as the tissue points' update, the grey-matter point walked towards
    CSF for MP-RAGE + 3-D T2w/FLAIR with TE ≈ 0.4 s over 12 slices, no pixel stayed pure white matter and
    the calibration fell back to the network."""
    from benchmarks import w2q_clinical as clinical
    from pinqi.cli.map import SHIPPED_WEIGHTS
    from pinqi.w2q.segmentation import segment_tissues
    from pinqi.w2q.training import load_w2q

    model = load_w2q(SHIPPED_WEIGHTS)[0].double().eval()
    entry = next(e for e in clinical.PROTOCOLS if "3-D T2w 3.2/0.40" in e[0])
    fr = clinical._fractions(12, 64)
    mask = fr.sum(1) >= 0.5
    images, seq, types, _ = clinical._images(fr, clinical.LITERATURE, entry, True, torch.Generator().manual_seed(0))
    b = images.shape[0]
    with torch.no_grad():
        first = model(images, seq.expand(b, 3, 6), types.expand(b, 3), mask, n_iterations=0).network[0]
    _, pure = segment_tissues(first, mask)
    assert int(pure[:, 2].sum()) > 100 and int(pure[:, 0].sum()) > 8
    assert float(fr.transpose(0, 1)[2][pure[:, 2]].mean()) > 0.95  # and it is white matter
