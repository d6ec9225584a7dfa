"""Every case of the hostile-input harness (benchmarks.robustness) ends in a clear error or the
right answer: no silently wrong result, no traceback or misleading message, no crash or hang."""

from __future__ import annotations

import pytest

from benchmarks import robustness
from benchmarks.robustness import GOOD, all_cases, run_case

CASES = all_cases()


@pytest.fixture(scope="module", autouse=True)
def _fixtures() -> None:
    from benchmarks import robustness_library

    robustness_library.warm_up()


def test_the_harness_covers_at_least_60_cases_in_every_area() -> None:
    assert len(CASES) >= 60
    areas = {case.area for case in CASES}
    assert {"operators", "solvers", "simulation", "pinqi", "w2q", "baselines", "metrics", "io", "reconstruct",
            "cli"} <= areas
    verbs = {case.run.__name__.split("_")[0] for case in CASES if case.cli}
    assert {"simulate", "train", "evaluate", "reconstruct", "map"} <= verbs


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}:{c.name}" for c in CASES])
def test_case_is_refused_clearly_or_answered_right(case: robustness.Case) -> None:
    outcome, detail, _ = run_case(case)
    assert outcome in GOOD, f"{case.area} / {case.name}: {outcome}: {detail}"


def test_the_classifier_tells_the_outcomes_apart() -> None:
    def silent(tmp):
        return 1.0

    def wrong_type(tmp):
        raise IndexError("index 3 is out of bounds")

    def vague(tmp):
        raise ValueError("something went wrong")

    def dies(tmp):
        import os

        os._exit(3)  # as a segfault would: no answer, a non-zero exit

    def hangs(tmp):
        import time

        time.sleep(30)

    def succeeds(tmp):
        return ["simulate", "--help"]

    cases = {
        "silently wrong": robustness.Case("t", "silent", silent, "x"),
        "traceback or misleading": robustness.Case("t", "wrong type", wrong_type, "x"),
        "crash or hang": robustness.Case("t", "dies", dies, "x", timeout=20),
    }
    for expected, case in cases.items():
        assert run_case(case)[0] == expected
    assert run_case(robustness.Case("t", "vague", vague, "names the argument"))[0] == "traceback or misleading"
    assert run_case(robustness.Case("t", "hangs", hangs, "x", timeout=1))[0] == "crash or hang"
    assert run_case(robustness.Case("t", "exits 0", succeeds, "", cli=True))[:2] == ("silently wrong", "exit status 0")
