"""benchmarks.solvers_fit runs end to end (--quick): the L-BFGS/Gauss-Newton table and the variable-projection reference."""

from __future__ import annotations

import math


def test_solvers_fit_benchmark_quick_runs() -> None:
    from benchmarks.solvers_fit import format_table, run

    rows = run(quick=True)
    assert {r["method"] for r in rows} >= {"lbfgs", "gauss-newton"}
    assert all(r["forward_s"] > 0 and r["backward_s"] > 0 and math.isfinite(r["objective"]) for r in rows)
    assert "| lbfgs |" in format_table(rows)


def test_varpro_benchmark_quick_runs() -> None:
    from benchmarks.solvers_fit import format_varpro_table, run_varpro

    rows = run_varpro(quick=True)
    assert all(r["solver"] == "varpro" and r["at_ref"] == 1.0 for r in rows)
    assert all(r["r1_ok"] >= 0.999 for r in rows if r["noise"] == 0)
    assert "ratio" in format_varpro_table(rows)
