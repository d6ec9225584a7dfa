"""benchmarks.solvers_dc runs end to end (--quick)."""

from __future__ import annotations

import pytest


def test_solvers_dc_benchmark_quick_runs() -> None:
    from benchmarks.solvers_dc import format_table, run, summary

    rows = run(quick=True)
    assert {(r["mode"], r["iterations"]) for r in rows} == {
        (m, n) for m in ("implicit", "unrolled") for n in (10, 50, 100)
    }
    for r in rows:
        assert r["forward_s"] > 0 and r["backward_s"] > 0 and r["peak_extra_mb"] >= 0
        assert r["backward_over_forward"] == pytest.approx(r["backward_s"] / r["forward_s"])
    names = [s["name"] for s in summary(rows)]
    assert len(names) == 5 and "unrolled / implicit peak memory at 50 iterations" in names
    table = format_table(rows)
    assert table.count("| implicit |") == 3 and "backward / forward time at 100 iterations" in table
