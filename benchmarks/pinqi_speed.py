"""PINQI training-step time and peak memory at the paper configuration, and inference time per slice.

``python -m benchmarks.pinqi_speed [--batch 8] [--size 192] [--coils 8] [--quick] [--device cpu|cuda]
[--infer-threads 1 2] [--forced] [--no-train]``

Each measurement runs in a fresh child process so that its peak memory is its own: peak resident
set size (``VmHWM``) on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU. The paper reports
about 36 GB for a training step at batch 8 on its GPU; the target here is <= 12 GB.

Inference (one slice, untrained networks) is timed once per thread setting of ``--infer-threads``,
each in its own child process doing the same work: 1 means one torch thread; ``n > 1`` runs under
:func:`pinqi.common.threads.inference_threads` ``(n)``, the library's safe setup, which uses at
most the idle cores (the number it used is reported). ``--forced`` adds ``n`` threads set
unconditionally, with ``OMP_WAIT_POLICY=PASSIVE``, for comparison. Each child runs the inference
``--repeats`` times and reports the fastest (wall clock, and process CPU time), with the per-component
breakdown of that run. Children keep freed memory in glibc malloc
(:func:`benchmarks.steady.steady_allocator`), so that page faults of fresh allocations do not
decide the timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from .steady import STEADY_ALLOCATOR_NOTE, steady_allocator
from .t1_common import write_results_text

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_GB = 36.0
TARGET_GB = 12.0


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _problem(batch: int, size: int, coils: int, device: torch.device):
    from operators import MultiCoilCartesianOp, simulate_coil_maps, variable_density_mask
    from simulation import SaturationRecovery

    g = torch.Generator().manual_seed(0)
    times = torch.tensor([0.5, 1.0, 1.5, 2.0, 8.0])
    q = SaturationRecovery(times)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    inside = (yy**2 / 0.8 + xx**2 / 0.6 < 1).float()
    r1 = 1 / (0.8 + 1.2 * (torch.sin(6 * xx) * torch.cos(5 * yy) > 0).float())
    params = torch.stack([0.9 * inside, 0.1 * inside, r1 * inside]).expand(batch, -1, -1, -1).contiguous()
    csm = simulate_coil_maps(coils, (size, size), generator=g, batch_size=batch)
    mask = variable_density_mask(5, (size, size), acceleration=8, generator=g, batch_size=batch)
    kspace = MultiCoilCartesianOp(csm, mask)(q(params))
    kspace = kspace + 0.01 * torch.randn(kspace.shape, dtype=kspace.dtype, generator=g) * mask[:, :, None]
    to = lambda t: t.to(device)  # noqa: E731
    return q.to(device), to(kspace), to(csm), to(mask), to(params), to(inside.bool().expand(batch, -1, -1))


class _ComponentTimer:
    """Wall time spent in P_θ, Y_θ, the data-consistency layer and the fit layer during a forward.

    Wraps the model's networks and the two solver functions as the model module sees them, and
    restores them on exit. On a GPU the times are only meaningful with synchronisation, so the
    breakdown is taken on the CPU only.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        import pinqi.model as model_module

        self.seconds: dict[str, float] = {}
        self._targets = [
            (model.parameter_net, "forward", "P_θ"),
            (model.image_net, "forward", "Y_θ"),
            (model_module, "data_consistency", "data consistency (CG)"),
            (model_module, "nonlinear_fit", "nonlinear fit"),
        ]
        self._saved: list[tuple[object, str, object, bool]] = []

    def _wrap(self, function, name: str):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return timed

    def __enter__(self) -> "_ComponentTimer":
        for owner, attribute, name in self._targets:
            if owner is None:
                continue
            own = attribute in vars(owner)
            original = getattr(owner, attribute)
            self._saved.append((owner, attribute, original, own))
            setattr(owner, attribute, self._wrap(original, name))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attribute, original, own in reversed(self._saved):
            if own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)


def child(
    kind: str, batch: int, size: int, coils: int, device_name: str, checkpoint: bool = True, threads: int = 0,
    safe: bool = False, repeats: int = 1,
) -> dict:
    """Runs in the child process: a measurement of ``kind`` ("train": one step; "infer": the fastest
    of ``repeats`` inferences, under :func:`~pinqi.common.threads.inference_threads` if ``safe``)."""
    from pinqi import PINQI, PINQIConfig
    from pinqi.common.threads import inference_threads
    from pinqi.losses import pinqi_loss

    steady_allocator()
    if threads and not safe:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    q, kspace, csm, mask, params, brain = _problem(batch, size, coils, device)
    model = PINQI(q, PINQIConfig(checkpoint_networks=checkpoint)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = _peak_rss_bytes()
    result: dict = {"threads": torch.get_num_threads()}
    if kind == "train":
        started = time.perf_counter()
        output = model(kspace, csm, mask)
        pinqi_loss(output, params, brain).backward()
        result["seconds"] = time.perf_counter() - started
    else:
        setup = inference_threads(threads or None) if safe else contextlib.nullcontext(torch.get_num_threads())
        with torch.no_grad(), setup as used:
            result["threads"] = used
            for _ in range(repeats):
                started, cpu = time.perf_counter(), time.process_time()
                with _ComponentTimer(model) if device.type == "cpu" else contextlib.nullcontext() as timer:
                    model(kspace, csm, mask)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                if seconds < result.get("seconds", math.inf):
                    result.update(seconds=seconds, cpu_seconds=cpu, breakdown=timer.seconds if timer else {})
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_rss_bytes()
    result.update(peak_bytes=peak, baseline_bytes=baseline)
    return result


def measure(
    kind: str, batch: int, size: int, coils: int, device: str, checkpoint: bool = True, threads: int = 0,
    safe: bool = False, repeats: int = 1, env: dict[str, str] | None = None,
) -> dict:
    """Run :func:`child` in a fresh interpreter (with ``env`` added to the environment) and return its figures."""
    code = (
        "import json, benchmarks.pinqi_speed as b; "
        f"print(json.dumps(b.child({kind!r}, {batch}, {size}, {coils}, {device!r}, {checkpoint}, {threads}, "
        f"{safe}, {repeats})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        raise RuntimeError(f"child failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _inference_rows(runs: list[tuple[str, dict]]) -> list[str]:
    """Markdown: thread settings side by side, then the breakdown of each."""
    one = runs[0][1]["seconds"]
    lines = ["| setting | threads used | wall s / slice | process CPU s | wall vs 1 thread |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['threads']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['seconds'] / one:.2f}x |"
              for name, r in runs]
    if all(r["breakdown"] for _, r in runs):
        names = list(runs[0][1]["breakdown"]) + ["other (A^H k, initial CG, q(p), glue)"]
        lines += ["", "Where the inference time goes (seconds, share of the wall time):", "",
                  "| component | " + " | ".join(name for name, _ in runs) + " |", "|---|" + "---:|" * len(runs)]
        for part in names:
            cells = []
            for _, r in runs:
                sec = r["breakdown"].get(part, r["seconds"] - sum(r["breakdown"].values()))
                cells.append(f"{sec:.2f} ({100 * sec / r['seconds']:.0f} %)")
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--no-checkpoint-networks", dest="checkpoint_networks", action="store_false",
        help="keep U-Net activations instead of recomputing them (PINQIConfig's default recomputes)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the training step (0: torch's default)")
    parser.add_argument("--infer-threads", type=int, nargs="+", default=[1, 2], help="inference thread settings")
    parser.add_argument("--forced", action="store_true", help="also force n > 1 threads (OMP_WAIT_POLICY=PASSIVE)")
    parser.add_argument("--repeats", type=int, default=3, help="inferences per child (the fastest counts)")
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the training step")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default results/pinqi_speed[_DEVICE].md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.coils, args.repeats = 1, 32, 2, 1
    common = (args.size, args.coils, args.device, args.checkpoint_networks)
    runs = []
    for n in args.infer_threads:
        name = "1 thread" if n == 1 else f"{n} threads, inference_threads({n})"
        runs.append((name, measure("infer", 1, *common, n, safe=n > 1, repeats=args.repeats)))
        if args.forced and n > 1:
            forced = measure("infer", 1, *common, n, repeats=args.repeats, env={"OMP_WAIT_POLICY": "PASSIVE"})
            runs.append((f"{n} threads forced, OMP_WAIT_POLICY=PASSIVE", forced))
    command = (
        f"python -m benchmarks.pinqi_speed --batch {args.batch} --size {args.size} --coils {args.coils}"
        f" --device {args.device}{'' if args.checkpoint_networks else ' --no-checkpoint-networks'}"
        f"{f' --threads {args.threads}' if args.threads else ''} --infer-threads {' '.join(map(str, args.infer_threads))}"
        f"{' --forced' if args.forced else ''} --repeats {args.repeats}{'' if args.train else ' --no-train'}"
    )
    lines = [
        f"# PINQI training step and inference ({date.today()}, torch {torch.__version__}, {args.device}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)",
        "", f"Command: `{command}`", "",
        "Untrained networks at the paper's widths, PINQIConfig defaults (T = 5, CG to 1e-6 or 100 "
        "iterations, the default fit layer). " + STEADY_ALLOCATOR_NOTE, "",
        f"Inference, one slice, {args.size}², {args.coils} coils (fastest of {args.repeats}):", "",
    ]
    lines += _inference_rows(runs)
    verdicts = []
    if args.train:
        train = measure("train", args.batch, *common, args.threads)
        peak_gb = train["peak_bytes"] / 1e9
        memory_kind = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak RSS (VmHWM)"
        lines += [
            "| training figure | value | target |", "|---|---|---|",
            f"| step (forward + backward), batch {args.batch}, {train['threads']} threads | {train['seconds']:.2f} s | — |",
            f"| peak memory ({memory_kind}) | {peak_gb:.2f} GB ({PAPER_GB / max(peak_gb, 1e-9):.1f}x below the "
            f"paper's {PAPER_GB:.0f} GB) | <= {TARGET_GB:.0f} GB |", "",
        ]
        verdicts.append(f"Memory target {'met' if peak_gb <= TARGET_GB else 'MISSED'} ({peak_gb:.2f} GB).")
    best = min(r["seconds"] for _, r in runs if r["threads"] <= 2)
    verdicts.append(f"Inference target (<= 3 s per slice on 2 CPU cores) {'met' if best <= 3.0 else 'MISSED'} "
                    f"({best:.2f} s/slice, best setting of at most 2 threads).")
    for name, r in runs[1:]:
        if "forced" not in name:
            ratio = r["seconds"] / runs[0][1]["seconds"]
            same = " - it chose 1 thread (no second idle core): the same work, the difference is timing noise" \
                if r["threads"] == 1 else ""
            verdicts.append(f"{name} <= 1 thread: {'met' if ratio <= 1.0 else 'MISSED'} ({ratio:.2f}x{same}).")
    text = "\n".join(lines + verdicts) + "\n"
    print(text)
    if not args.quick or args.out is not None:
        suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
        out = args.out or RESULTS / f"pinqi_speed{suffix}.md"
        write_results_text(out, text)
    return text


if __name__ == "__main__":
    main()
