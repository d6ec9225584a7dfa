"""Hostile-input harness: bad, empty, corrupt and foreign inputs to the library and the ``pinqi``
command, each a small function, each run in a forked child with a timeout.

Run ``python -m benchmarks.robustness`` (``--area operators`` for one area); it prints and writes
``benchmarks/results/robustness.md``: one row per case and the counts per outcome.

Outcomes
--------
- ``clear error``: a ``ValueError``/``TypeError``/``OSError`` whose message matches what the case
  expects (it names the argument or file and what is wrong); for the command, exit status 2 and
  one line ``pinqi <verb>: error: ...`` without a traceback, and no temporary file left behind.
- ``right answer``: the case checks that the input is handled correctly instead (e.g. NaN outside
  a metric's mask gives the clean value; a scale of 1e6 gives the same R1).
- ``traceback or misleading``: another exception type, a message that does not say what is wrong,
  a command that prints a traceback, several error lines or another status.
- ``silently wrong``: it returned (or the command exited 0), or left temporary files behind.
- ``crash or hang``: the child died (signal, abort) or gave no answer within the timeout.

The same cases run as tests (``tests/benchmarks/test_robustness.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RIGHT", "OUTCOMES", "Case", "register", "classify_library", "classify_cli", "run_case", "run_all",
           "write_report", "main"]

RIGHT = "right answer"
OUTCOMES = ("clear error", RIGHT, "traceback or misleading", "silently wrong", "crash or hang")
GOOD = ("clear error", RIGHT)
CLEAR_TYPES = (ValueError, TypeError, OSError)
RESULTS = Path(__file__).resolve().parent / "results" / "robustness.md"
COMMAND = "OMP_NUM_THREADS=1 python -m benchmarks.robustness"


@dataclass(frozen=True)
class Case:
    """One hostile input.

    Attributes
    ----------
    area
        What it exercises (``operators``, ``solvers``, ..., ``cli``).
    name
        Short description.
    run
        ``run(tmp)`` with a fresh folder: a library case calls the API (raising, or returning
        :data:`RIGHT` after checking the answer); a command case returns the ``argv`` of ``pinqi``.
    expect
        Regular expression the error message must match (ignored for right-answer cases).
    cli
        Whether ``run`` returns an argv for :func:`pinqi.cli.main`.
    timeout
        Seconds before the case counts as a hang.
    """

    area: str
    name: str
    run: Callable[[Path], Any]
    expect: str
    cli: bool = False
    timeout: float = 60.0


CASES: list[Case] = []


def register(area: str, expect: str = "", *, cli: bool = False, timeout: float = 60.0) -> Callable:
    """Decorator: add the function as a case named after it (underscores become spaces)."""

    def add(fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
        CASES.append(Case(area, fn.__name__.strip("_").replace("_", " "), fn, expect, cli, timeout))
        return fn

    return add


def _short(text: str, n: int = 140) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def _leftovers(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if ".tmp" in p.name and p.name.startswith("."))


def classify_library(case: Case, tmp: Path) -> tuple[str, str]:
    """Run a library case; returns (outcome, detail)."""
    try:
        value = case.run(tmp)
    except CLEAR_TYPES as error:
        message = f"{type(error).__name__}: {error}"
        if case.expect and re.search(case.expect, str(error)):
            return "clear error", message
        return "traceback or misleading", f"{message} (expected /{case.expect}/)"
    except Exception as error:  # noqa: BLE001 - classifying every failure is the point
        return "traceback or misleading", f"{type(error).__name__}: {error}"
    if value == RIGHT:
        return RIGHT, "handled correctly"
    return "silently wrong", f"returned {type(value).__name__}"


def classify_cli(case: Case, tmp: Path) -> tuple[str, str]:
    """Run ``pinqi`` with the case's argv in this process; returns (outcome, detail)."""
    from pinqi.cli import EXAMPLES, main

    argv = [str(a) for a in case.run(tmp)]
    prog = f"pinqi {argv[0]}" if argv and argv[0] in EXAMPLES else "pinqi"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 2
        except BaseException as error:  # noqa: BLE001
            return "traceback or misleading", f"main raised {type(error).__name__}: {error}"
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    left = _leftovers(tmp)
    if code == 0:
        return "silently wrong", "exit status 0"
    if left:
        return "silently wrong", f"temporary files left: {left}"
    if code != 2 or "Traceback" in text or len(errors) != 1 or lines[-1] != errors[0]:
        return "traceback or misleading", f"status {code}: {text.strip()[-300:]}"
    if not re.search(case.expect, errors[0]):
        return "traceback or misleading", f"{errors[0]} (expected /{case.expect}/)"
    return "clear error", errors[0]


def _child(case: Case, tmp: Path, conn: Any) -> None:
    import torch

    torch.set_num_threads(1)
    try:
        result = (classify_cli if case.cli else classify_library)(case, tmp)
    except BaseException as error:  # noqa: BLE001
        result = ("traceback or misleading", f"{type(error).__name__}: {error}")
    conn.send(result)
    conn.close()
    os._exit(0)


def run_case(case: Case, timeout: float | None = None) -> tuple[str, str, float]:
    """Run ``case`` in a forked child; returns (outcome, detail, seconds)."""
    ctx = mp.get_context("fork")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pinqi-robustness-") as folder:
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child, args=(case, Path(folder), send))
        child.start()
        send.close()
        limit = case.timeout if timeout is None else timeout
        if receive.poll(limit):
            try:
                outcome, detail = receive.recv()
            except EOFError:
                outcome, detail = "crash or hang", "the child died before answering"
        else:
            outcome, detail = "crash or hang", f"no answer within {limit:g} s"
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
        if outcome != "crash or hang" and child.exitcode not in (0, None):
            outcome, detail = "crash or hang", f"exit code {child.exitcode}"
        elif outcome == "crash or hang" and child.exitcode and child.exitcode < 0:
            detail = f"killed by signal {-child.exitcode}"
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    return outcome, _short(detail.replace(folder, "TMP").replace(root, "")), time.perf_counter() - started


def all_cases() -> list[Case]:
    """Every registered case (importing the case modules registers them)."""
    from . import robustness as registry  # under ``python -m`` this module is __main__, not the registry
    from . import robustness_cli, robustness_library  # noqa: F401

    return list(registry.CASES)


def run_all(areas: Sequence[str] | None = None, verbose: bool = True) -> list[tuple[Case, str, str, float]]:
    """Run every case (of ``areas``); returns (case, outcome, detail, seconds) rows."""
    from . import robustness_library

    robustness_library.warm_up()  # children inherit the fixtures instead of rebuilding them
    rows = []
    for case in all_cases():
        if areas and case.area not in areas:
            continue
        outcome, detail, seconds = run_case(case)
        rows.append((case, outcome, detail, seconds))
        if verbose:
            print(f"{outcome:>24}  {case.area:>11}  {case.name}  ({seconds:.1f} s)", flush=True)
    return rows


def write_report(rows: list[tuple[Case, str, str, float]], path: Path = RESULTS) -> str:
    """The markdown report: counts, command and one row per case; written to ``path``."""
    counts = Counter(outcome for _, outcome, _, _ in rows)
    lines = ["# Hostile-input harness", "", f"Command: `{COMMAND}` ({len(rows)} cases, "
             f"{sum(s for *_, s in rows):.0f} s in all).", "", "| outcome | cases |", "|---|---|"]
    lines += [f"| {outcome} | {counts.get(outcome, 0)} |" for outcome in OUTCOMES]
    lines += ["", "| area | case | outcome | what came back |", "|---|---|---|---|"]
    lines += [f"| {case.area} | {case.name} | {outcome} | {_short(detail)} |" for case, outcome, detail, _ in rows]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--area", nargs="*", default=None, help="only these areas")
    parser.add_argument("--out", type=Path, default=RESULTS, help="report file")
    args = parser.parse_args(argv)
    rows = run_all(args.area)
    text = write_report(rows, args.out)
    print(text.split("\n\n| area")[0])
    bad = sum(1 for _, outcome, _, _ in rows if outcome not in GOOD)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
