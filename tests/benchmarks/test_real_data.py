"""benchmarks.real_data: the tube error and the target verdicts (the full run is a benchmark)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.real_data import tube_errors, verdicts
from simulation.tube_phantom import TABLE_I_T1


def test_tube_errors_rms_over_roi_means():
    rois = torch.zeros(len(TABLE_I_T1), 4, 4, dtype=torch.bool)
    t1 = torch.zeros(4, 4)
    for i, value in enumerate(TABLE_I_T1):
        rois[i].view(-1)[i] = True
        t1.view(-1)[i] = value + (0.03 if i == 0 else 0.0)
    rms, means = tube_errors(t1, rois)
    assert rms == pytest.approx(30.0 / len(TABLE_I_T1) ** 0.5, rel=1e-5)
    assert means[1] == pytest.approx(TABLE_I_T1[1], abs=1e-3)


def _phantom(size: int, acc: str, pinqi: float, cg: float) -> list[dict]:
    return [{"size": size, "acceleration": acc, "method": "PINQI", "tube T1 RMS [ms]": f"{pinqi}"},
            {"size": size, "acceleration": acc, "method": "CG-SENSE + fit", "tube T1 RMS [ms]": f"{cg}"}]


def _brain(method: str, maps: str, value: float) -> dict:
    return {"method": method, "coil maps": maps, "T1 nRMSE": f"{value}"}


def test_verdicts_check_every_target_including_the_learned_baseline():
    phantom = _phantom(64, "1x", 3.0, 2.7) + _phantom(64, "8x", 30.0, 90.0)
    brain = [_brain("PINQI", "estimated", 0.10), _brain("PINQI", "true", 0.095),
             _brain("CG-SENSE + fit", "estimated", 0.30), _brain("DOPAMINE (4000 steps)", "estimated", 0.14),
             _brain("MANTIS (4000 steps)", "estimated", 0.20), _brain("DOPAMINE (4000 steps)", "true", 0.01),
             _brain("PINQI, prior strength 0", "estimated", 0.11)]
    lines = verdicts(phantom, brain, 64)
    assert "PINQI / pixel fit = 1.11 (target <= 1.2): met" in lines[0]
    assert "PINQI 30.0 ms vs CG-SENSE + fit 90.0 ms" in lines[1] and lines[1].endswith("met")
    assert "estimated / true maps = 1.053" in lines[2] and lines[2].endswith("met")
    assert "67 % below CG-SENSE" in lines[3] and lines[3].endswith("met")
    # the best learned baseline with estimated maps is DOPAMINE (0.14): 29 % above PINQI's error
    assert "29 % below the best learned baseline, DOPAMINE (4000 steps)" in lines[4] and lines[4].endswith(": met")
    worse = [dict(r, **{"T1 nRMSE": "0.11"}) if r["method"].startswith("DOPAMINE") else r for r in brain]
    assert verdicts(phantom, worse, 64)[4].endswith("NOT met")


def test_verdicts_say_when_no_learned_baseline_was_measured():
    brain = [_brain("PINQI", "estimated", 0.1), _brain("PINQI", "true", 0.1), _brain("CG-SENSE + fit", "estimated", 0.3)]
    assert "not measured" in verdicts([], brain, 64)[-1]


def test_ship_benchmark_preset_is_the_shipped_models_data_at_its_budget():
    from benchmarks.t1_common import get_preset
    from pinqi.config import ship_preset

    preset, ship = get_preset("ship"), ship_preset()
    assert preset.total_steps == 4000 and preset.samples_seen == 4000 * ship.batch_size
    for name in ("image_size", "n_coils", "times", "acceleration", "estimated_csm", "wide_t1", "inserts",
                 "intensity_scale", "global_phase", "calibration_lines", "csm_method", "seed"):
        assert getattr(preset.train, name) == getattr(ship, name), name


def test_phantom_limits_reports_every_row() -> None:
    """``benchmarks.phantom_limits`` on one small draw: every method × coil maps × noise row, finite errors."""
    from benchmarks import phantom_limits

    rows = phantom_limits.run(size=32, seeds=1, iterations=3)
    assert len(rows) == 18 and all(len(v) == 1 and 0 <= v[0] < 1e4 for v in rows.values())
    assert "| PINQI, prior strength 0 | true | 0 |" in phantom_limits.table(rows)
