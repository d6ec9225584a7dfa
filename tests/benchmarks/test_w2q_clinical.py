"""The clinical W2Q benchmark's truth: fraction-weighted maps (what map-mixed images are made of)
and the ROI composition lines of its tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from benchmarks import w2q_clinical as clinical


def test_maps_are_fraction_weighted_tissue_values_with_background() -> None:
    fr = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    fr[0, 1, 0, 0] = 1.0  # pure GM
    fr[0, :, 0, 1] = torch.tensor([0.03, 0.97, 0.0], dtype=torch.float64)  # "pure" GM with 3 % CSF
    maps = clinical._maps(fr, clinical.LITERATURE)
    assert torch.allclose(maps[0, :, 0, 0], torch.tensor([0.80, 1.30, 0.09], dtype=torch.float64))
    # 3 % CSF raises the fraction-weighted T2 by more than half of GM's own value
    assert abs(float(maps[0, 2, 0, 1]) - (0.97 * 0.09 + 0.03 * 1.8)) < 1e-12
    assert float(maps[0, 2, 0, 1]) > 1.5 * 0.09
    # background (no tissue): PD 0, T1 1 s, T2 0.1 s
    assert torch.allclose(maps[0, :, 1, 1], torch.tensor([0.0, 1.0, 0.1], dtype=torch.float64))


def test_table_reports_roi_composition() -> None:
    result = {"protocols": {}, "roi": {"gm": {"csf fraction": 0.026, "gm fraction": 0.959, "wm fraction": 0.014,
                                               "pixels": 46, "fraction-weighted t2": 0.1345}}}
    lines = clinical._table(result)
    assert any("GM ROI (46 pixels)" in line and "CSF 0.026" in line and "0.1345 s" in line for line in lines)


def test_values_native_reports_both_settings_for_every_value_set_and_noise(tmp_path: Path) -> None:
    """`python -m benchmarks.w2q_values_native` end to end on a micro checkpoint, one slice and one
    protocol: a table per value set with both calibration settings at both noise levels."""
    from benchmarks import w2q_values_native as native
    from pinqi.w2q.config import load_w2q_config
    from pinqi.w2q.training import W2QTrainer

    W2QTrainer(load_w2q_config("micro"), tmp_path / "w2q", progress=False).run()
    out = tmp_path / "values.md"
    text = native.main(["--checkpoint", str(tmp_path / "w2q" / "checkpoint.pt"), "--n-slices", "1", "--n-protocols", "1",
                        "--out", str(out)])
    assert out.read_text() == text + "\n"
    results = json.loads(out.with_suffix(".json").read_text())
    assert list(results) == list(native.value_sets())
    for label, rows in results.items():
        assert f"## {label}" in text and len(rows) == 4
        for name, summary in rows.items():
            assert f"| {name} |" in text and all(math.isfinite(summary[k]["error %"]) for k in native.KEYS)
