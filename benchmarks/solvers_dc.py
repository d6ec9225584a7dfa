"""Benchmark: ``data_consistency`` implicit vs unrolled backward (time and peak memory).

Setup (full): ``MultiCoilCartesianOp``, batch 4, T = 5, 8 coils, 192 x 192, complex64, 1-D
variable-density mask at 8x, two regularisers ``(λ_q (B,), q)`` and ``(λ_y scalar, y_reg)`` whose
λ and targets require grad (as in PINQI; k and csm do not). CG runs exactly 10 / 50 / 100
iterations (``tol=0``, same count in the implicit backward).

Measured per configuration:

* forward time: the ``data_consistency`` call; backward time: ``loss.backward()`` with
  ``loss = Re⟨w, y⟩`` (best of ``repeats`` after one short warm-up call);
* peak memory: the configuration runs in a fresh child process (``python -m
  benchmarks.solvers_dc --child ...``) that reports its peak RSS (``VmHWM``); a baseline child
  builds the same inputs and operator but does not run the layer, and its peak is subtracted, so
  the figure is the layer's own extra memory (forward + backward).

``--quick`` (tiny sizes, < 10 s) runs every configuration in a single child, resetting the
peak-RSS counter between configurations (``/proc/self/clear_refs``); its memory figures are
rough and only exercise the code path.

Run: ``python -m benchmarks.solvers_dc [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

ITERATIONS = (10, 50, 100)
MODES = ("implicit", "unrolled")


@dataclass(frozen=True)
class Sizes:
    batch: int
    times: int
    coils: int
    ny: int
    nx: int
    acceleration: float
    n_center: int
    repeats: int


FULL = Sizes(batch=4, times=5, coils=8, ny=192, nx=192, acceleration=8.0, n_center=8, repeats=2)
QUICK = Sizes(batch=2, times=2, coils=3, ny=32, nx=32, acceleration=4.0, n_center=2, repeats=1)


# --------------------------------------------------------------------------- child side
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"{field}:\s+(\d+)\s+kB", f.read())
    return int(match.group(1)) if match else -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mask(sizes: Sizes, generator: Any) -> tuple[Any, str]:
    """1-D variable-density mask (B, T, Y, X) and its source: the operators' sampler when it
    exists, else a stand-in."""
    import torch

    try:
        from operators import variable_density_mask
    except (ImportError, AttributeError):
        variable_density_mask = None
    if variable_density_mask is not None:
        mask = variable_density_mask(
            sizes.times, shape=(sizes.ny, sizes.nx), acceleration=sizes.acceleration,
            n_center=sizes.n_center, generator=generator, batch_size=sizes.batch,
        )
        return mask, "operators.variable_density_mask"
    # Stand-in: fully sampled centre plus phase-encode lines drawn with density ∝ 1/(1+|ky|).
    ky = torch.arange(sizes.ny, dtype=torch.float64) - sizes.ny // 2
    centre = ky.abs() < sizes.n_center / 2
    n_lines = max(int(round(sizes.ny / sizes.acceleration)) - int(centre.sum()), 0)
    weights = torch.where(centre, torch.zeros_like(ky), 1 / (1 + ky.abs()))
    mask = torch.zeros(sizes.batch, sizes.times, sizes.ny, 1, dtype=torch.bool)
    for b in range(sizes.batch):
        for t in range(sizes.times):
            lines = torch.multinomial(weights, n_lines, replacement=False, generator=generator)
            mask[b, t, lines] = True
            mask[b, t, centre] = True
    return mask.expand(-1, -1, -1, sizes.nx), "stand-in (density 1/(1+|ky|))"


def _inputs(sizes: Sizes) -> dict[str, Any]:
    import torch

    from operators import MultiCoilCartesianOp

    g = torch.Generator().manual_seed(0)
    dtype = torch.complex64
    image_shape = (sizes.batch, sizes.times, sizes.ny, sizes.nx)
    csm = torch.randn(sizes.batch, sizes.coils, sizes.ny, sizes.nx, dtype=dtype, generator=g)
    csm = csm / csm.abs().square().sum(1, keepdim=True).sqrt()
    mask, mask_source = _mask(sizes, g)
    op = MultiCoilCartesianOp(csm, mask)
    with torch.no_grad():
        k = op(torch.randn(image_shape, dtype=dtype, generator=g))
    q = torch.randn(image_shape, dtype=dtype, generator=g).requires_grad_()
    y_reg = torch.randn(image_shape, dtype=dtype, generator=g).requires_grad_()
    lam_q = torch.full((sizes.batch,), 0.05, requires_grad=True)
    lam_y = torch.tensor(0.02, requires_grad=True)
    weight = torch.randn(image_shape, dtype=dtype, generator=g)
    return {"op": op, "k": k, "regs": [(lam_q, q), (lam_y, y_reg)], "weight": weight, "mask_source": mask_source,
            "sampled_fraction": float(mask.float().mean())}


def _run_config(inputs: dict[str, Any], mode: str, iterations: int, repeats: int) -> dict[str, Any]:
    from solvers.data_consistency import data_consistency

    def once(max_iter: int) -> tuple[float, float, Any]:
        t0 = time.perf_counter()
        y, info = data_consistency(
            inputs["op"], inputs["k"], inputs["regs"], tol=0.0, max_iter=max_iter,
            implicit=mode == "implicit", return_info=True,
        )
        t1 = time.perf_counter()
        loss = (y * inputs["weight"].conj()).real.sum()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        for _, t in inputs["regs"]:
            t.grad = None
        return t1 - t0, t3 - t2, info

    once(2)  # warm-up: FFT plans, cached gram weights
    forward, backward = [], []
    for _ in range(repeats):
        f, b, info = once(iterations)
        forward.append(f)
        backward.append(b)
    assert bool((info.forward.iterations == iterations).all()), "CG did not run the forced iterations"
    if mode == "implicit":
        assert bool((info.backward.iterations == iterations).all()), "backward CG did not run the forced iterations"
    return {"forward_s": min(forward), "backward_s": min(backward)}


def _child(config: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    if config["threads"]:
        torch.set_num_threads(config["threads"])
    logging.getLogger("solvers").setLevel(logging.ERROR)  # tol=0 "non-convergence" is intended
    sizes = Sizes(**config["sizes"])
    inputs = _inputs(sizes)
    results = []
    if config["runs"] == [["baseline", 0]]:
        return [{"mode": "baseline", "iterations": 0, "peak_kib": _rss_kib("VmHWM")}]
    for mode, iterations in config["runs"]:
        before = _rss_kib("VmRSS")
        reset = config["reset_peak"] and _reset_peak()
        timing = _run_config(inputs, mode, iterations, sizes.repeats)
        results.append({"mode": mode, "iterations": iterations, "peak_kib": _rss_kib("VmHWM"),
                        "rss_before_kib": before, "peak_reset": reset, "mask": inputs["mask_source"],
                        "sampled_fraction": inputs["sampled_fraction"], **timing})
    return results


# --------------------------------------------------------------------------- parent side
def _spawn(sizes: Sizes, runs: list[tuple[str, int]], reset_peak: bool, threads: int | None) -> list[dict[str, Any]]:
    config = json.dumps({"sizes": asdict(sizes), "runs": runs, "reset_peak": reset_peak, "threads": threads})
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.solvers_dc", "--child", config],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {runs} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, threads: int | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; one dict per (mode, iterations).

    ``threads``: torch intra-op threads in the children (default: torch's default; ``--quick``
    uses 1, since tiny problems only lose from threading on a shared machine).

    Keys: ``benchmark`` ("data_consistency"), ``mode`` ("implicit"/"unrolled"), ``iterations``,
    ``forward_s``, ``backward_s``, ``backward_over_forward``, ``peak_extra_mb`` (the layer's
    peak memory above the baseline, MiB), ``peak_total_mb``, ``baseline_mb``, ``shape``
    (B, T, C, Y, X), ``dtype``, ``quick``, ``memory_method``, ``threads``, ``mask`` (its source)
    and ``sampled_fraction``.
    """
    sizes = QUICK if quick else FULL
    if quick and threads is None:
        threads = 1
    configs = [(mode, n) for mode in MODES for n in ITERATIONS]
    if quick:
        baseline = None
        results = _spawn(sizes, configs, reset_peak=True, threads=threads)
        method = "one child, peak-RSS reset between configurations (rough)"
    else:
        (baseline,) = _spawn(sizes, [("baseline", 0)], reset_peak=False, threads=threads)
        results = [r for config in configs for r in _spawn(sizes, [config], reset_peak=False, threads=threads)]
        method = "fresh child per configuration, peak RSS minus baseline child"
    rows = []
    for r in results:
        base_kib = r["rss_before_kib"] if baseline is None else baseline["peak_kib"]
        rows.append({
            "benchmark": "data_consistency",
            "mode": r["mode"],
            "iterations": r["iterations"],
            "forward_s": r["forward_s"],
            "backward_s": r["backward_s"],
            "backward_over_forward": r["backward_s"] / r["forward_s"],
            "peak_extra_mb": max(r["peak_kib"] - base_kib, 0) / 1024,
            "peak_total_mb": r["peak_kib"] / 1024,
            "baseline_mb": base_kib / 1024,
            "shape": (sizes.batch, sizes.times, sizes.coils, sizes.ny, sizes.nx),
            "dtype": "complex64",
            "quick": quick,
            "memory_method": method,
            "threads": threads,
            "mask": r["mask"],
            "sampled_fraction": r["sampled_fraction"],
        })
    return rows


def _find(rows: list[dict[str, Any]], mode: str, iterations: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["mode"] == mode and r["iterations"] == iterations), None)


def _ratio(num: float, den: float, quick: bool) -> float | None:
    """Memory ratio ``num / den``; ``None`` in quick mode (tiny sizes, shared child) or when
    ``den`` is below 1 MiB (not measurable by peak RSS)."""
    return num / den if den >= 1.0 and not quick else None


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The target ratios: ``name``, ``value``, ``target``, ``met`` (``None``: not measured)."""
    out = []
    i10, i50, i100, u50 = (_find(rows, m, n) for m, n in
                           (("implicit", 10), ("implicit", 50), ("implicit", 100), ("unrolled", 50)))
    if i10 and i100:
        v = _ratio(i100["peak_extra_mb"], i10["peak_extra_mb"], i10["quick"])
        out.append({"name": "implicit peak memory, 100 vs 10 iterations", "value": v, "target": "<= 1.1x",
                    "met": None if v is None else v <= 1.1})
    if i50 and u50:
        v = _ratio(u50["peak_extra_mb"], i50["peak_extra_mb"], i50["quick"])
        out.append({"name": "unrolled / implicit peak memory at 50 iterations", "value": v, "target": ">= 5x",
                    "met": None if v is None else v >= 5})
    for r in (i10, i50, i100):
        if r:
            v = r["backward_over_forward"]
            out.append({"name": f"implicit backward / forward time at {r['iterations']} iterations", "value": v,
                        "target": "<= 1.2x", "met": v <= 1.2})
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per configuration, then the target ratios."""
    if not rows:
        return "(no rows)"
    b, t, c, y, x = rows[0]["shape"]
    lines = [
        f"data_consistency, MultiCoilCartesianOp, B={b} T={t} C={c} {y}x{x} {rows[0]['dtype']}, "
        f"two regularisers, CG forced to N iterations, torch threads: {rows[0]['threads'] or 'default'}; "
        f"mask: {rows[0]['mask']}, sampled fraction {rows[0]['sampled_fraction']:.3f}; "
        f"memory: {rows[0]['memory_method']}",
        "",
        "| backward | CG iterations | forward [s] | backward [s] | backward/forward | peak extra [MiB] |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['iterations']} | {r['forward_s']:.3f} | {r['backward_s']:.3f} | "
                     f"{r['backward_over_forward']:.2f}x | {r['peak_extra_mb']:.0f} |")
    lines += ["", "| ratio | value | target | met |", "|---|---:|---|---|"]
    for s in summary(rows):
        value = "n/a" if s["value"] is None else f"{s['value']:.2f}x"
        met = "n/a" if s["met"] is None else ("yes" if s["met"] else "NO")
        lines.append(f"| {s['name']} | {value} | {s['target']} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one child (< 10 s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the children")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return
    print(format_table(run(quick=args.quick, threads=args.threads)))


if __name__ == "__main__":
    main()
