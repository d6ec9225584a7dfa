"""PINQI training-step time and peak memory at the paper configuration, and inference time per slice.

``python -m benchmarks.pinqi_speed [--batch 8] [--size 192] [--coils 8] [--quick] [--device cpu|cuda]``

Each measurement runs in a fresh child process so that its peak memory is its own: peak resident
set size (``VmHWM``) on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU. The paper reports
about 36 GB for a training step at batch 8 on its GPU; the target here is <= 12 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

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
    kind: str, batch: int, size: int, coils: int, device_name: str, checkpoint: bool = True, threads: int = 0
) -> dict:
    """Runs in the child process: one warm-up-free measurement of ``kind`` ("train" or "infer")."""
    from pinqi import PINQI, PINQIConfig
    from pinqi.losses import pinqi_loss

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    q, kspace, csm, mask, params, brain = _problem(batch, size, coils, device)
    model = PINQI(q, PINQIConfig(checkpoint_networks=checkpoint)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = _peak_rss_bytes()
    started = time.perf_counter()
    if kind == "train":
        output = model(kspace, csm, mask)
        pinqi_loss(output, params, brain).backward()
    else:
        with torch.no_grad():
            if device.type == "cpu":
                with _ComponentTimer(model) as timer:
                    model(kspace, csm, mask)
                breakdown = timer.seconds
            else:
                model(kspace, csm, mask)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_rss_bytes()
    result = {"seconds": time.perf_counter() - started, "peak_bytes": peak, "baseline_bytes": baseline,
              "threads": torch.get_num_threads()}
    if kind == "infer" and device.type == "cpu":
        result["breakdown"] = breakdown
    return result


def measure(
    kind: str, batch: int, size: int, coils: int, device: str, checkpoint: bool = True, threads: int = 0
) -> dict:
    """Run :func:`child` in a fresh interpreter and return its figures."""
    code = (
        "import json, benchmarks.pinqi_speed as b; "
        f"print(json.dumps(b.child({kind!r}, {batch}, {size}, {coils}, {device!r}, {checkpoint}, {threads})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the children (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default results/pinqi_speed[_DEVICE].md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.coils = 1, 32, 2
    train = measure("train", args.batch, args.size, args.coils, args.device, args.checkpoint_networks, args.threads)
    infer = measure("infer", 1, args.size, args.coils, args.device, args.checkpoint_networks, args.threads)
    peak_gb = train["peak_bytes"] / 1e9
    memory_kind = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak RSS (VmHWM) of the process"
    lines = [
        f"# PINQI training step and inference ({date.today()}, torch {torch.__version__}, "
        f"{args.device}, {train['threads']} torch threads, {platform.processor() or platform.machine()}, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)",
        "",
        f"Command: `python -m benchmarks.pinqi_speed --batch {args.batch} --size {args.size} --coils {args.coils}"
        f" --device {args.device}{'' if args.checkpoint_networks else ' --no-checkpoint-networks'}"
        f"{f' --threads {args.threads}' if args.threads else ''}`",
        "",
        "Untrained networks at the paper's widths, PINQIConfig defaults (T = 5, CG to 1e-6 or 100 "
        "iterations, per-pixel L-BFGS to the solver's float32 tolerance or 50 iterations).",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| training step (forward + backward), batch {args.batch}, {args.size}², {args.coils} coils, T=5 | "
        f"{train['seconds']:.2f} s | — |",
        f"| peak memory of the training step ({memory_kind}) | {peak_gb:.2f} GB "
        f"({PAPER_GB / max(peak_gb, 1e-9):.1f}x below the paper's {PAPER_GB:.0f} GB) | <= {TARGET_GB:.0f} GB |",
        f"| inference, one slice | {infer['seconds']:.2f} s | <= 1 s on 2 CPU cores |",
        "",
    ]
    if "breakdown" in infer:
        parts = dict(infer["breakdown"])
        parts["other (A^H k, initial CG, q(p), glue)"] = infer["seconds"] - sum(parts.values())
        lines += ["Where the inference time goes:", "", "| component | seconds | share |", "|---|---:|---:|"]
        lines += [f"| {name} | {sec:.2f} | {100 * sec / infer['seconds']:.0f} % |" for name, sec in parts.items()]
        lines.append("")
    verdicts = []
    verdicts.append(f"Memory target {'met' if peak_gb <= TARGET_GB else 'MISSED'} ({peak_gb:.2f} GB).")
    verdicts.append(f"Inference target {'met' if infer['seconds'] <= 1.0 else 'MISSED'} ({infer['seconds']:.2f} s/slice).")
    text = "\n".join(lines + verdicts) + "\n"
    print(text)
    if not args.quick or args.out is not None:
        suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
        out = args.out or RESULTS / f"pinqi_speed{suffix}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return text


if __name__ == "__main__":
    main()
