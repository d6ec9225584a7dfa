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


def test_pixel_fit_reference_is_exact_on_pure_pixels_and_protocol_dependent_on_nearly_pure_ones() -> None:
    """The per-pixel reference of the pure-ROI test: a single-compartment fit of a truly pure pixel's
    noise-free signals returns the tissue's values; 1 % CSF in a 99 % WM pixel moves WM T1 by much
    more than the CV target on a long-TE protocol and far less on a short-TE one."""
    fr = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    fr[0, 2, :2] = 1.0  # pure WM
    fr[0, 1, 2:, :2] = 1.0  # pure GM
    fr[0, :, 2:, 2:] = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)[:, None, None]  # a partial volume
    long_te = clinical.PROTOCOLS[2]  # 3-D T2w TE 0.40 s, 3-D FLAIR
    short_te = clinical.PROTOCOLS[3]  # T2w TE 0.10 s, FLAIR TI 1.6 s
    pure = clinical.pixel_fit_reference(1, clinical.LITERATURE, (long_te, short_te), fractions=fr)
    for row in pure["protocols"].values():
        for key, truth in clinical.tissue_truth(clinical.LITERATURE).items():
            assert abs(row[key] / truth - 1) < 1e-4, (key, row[key], truth)
        assert row["partial-volume t2 MAPE %"] > 1.0  # the 50/50 CSF/GM pixels fit no single compartment
    assert pure["summary"]["wm t1"]["cv %"] < 1e-3
    fr[0, :, :2] = torch.tensor([0.01, 0.0, 0.99], dtype=torch.float64)[:, None, None]  # "pure" WM with 1 % CSF
    nearly = clinical.pixel_fit_reference(1, clinical.LITERATURE, (long_te, short_te), fractions=fr)["protocols"]
    long_err = nearly[long_te[0]]["wm t1"] / 0.85 - 1
    short_err = nearly[short_te[0]]["wm t1"] / 0.85 - 1
    assert long_err > 0.2 and abs(short_err) < 0.1 * long_err, (long_err, short_err)
