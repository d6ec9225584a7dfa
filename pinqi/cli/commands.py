"""The ``pinqi`` sub-commands simulate, train, evaluate and demo (the parser lives in :mod:`pinqi.cli`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from ..io.outputs import OutputSet
from .tables import print_table


# -- simulate ----------------------------------------------------------------------------------
def simulate_split(
    out: Path,
    split: str,
    *,
    anatomy: str = "mni152",
    n_per_acceleration: int = 16,
    accelerations: tuple[float, ...] = (4.0, 6.0, 8.0),
    size: int = 192,
    coils: int = 8,
    times: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 8.0),
    seed: int = 1234,
    cache_dir: Path | None = None,
    outputs: OutputSet | None = None,
) -> Path:
    """Write (or reuse) the fixed ``split`` set as ``out/<split>.h5``; returns its path.

    ``n_per_acceleration`` slices at each acceleration, each group drawn from its own seeded
    :class:`simulation.T1MappingDataset` (seed ``seed + 1000·j`` for the j-th acceleration), so
    the groups are balanced. A file written with the same arguments and code version is reused.
    With ``outputs`` (an :class:`~pinqi.io.outputs.OutputSet` of ``out``) the file is written to
    a name it reserves and appears only when the whole set is committed.
    """
    from torch.utils.data import ConcatDataset

    from simulation import T1MappingDataset, load_anatomy
    from simulation.h5io import dataset_fingerprint, holds_fingerprint, write_t1_dataset_h5

    path = Path(out) / f"{split}.h5"
    args = {
        "anatomy": anatomy, "split": split, "n_per_acceleration": n_per_acceleration,
        "accelerations": [float(a) for a in accelerations], "size": size, "coils": coils,
        "times": [float(t) for t in times], "seed": seed,
    }
    fingerprint = dataset_fingerprint(args)
    if holds_fingerprint(path, fingerprint):
        return path
    anatomy_kwargs: dict[str, Any] = {}
    if anatomy == "brainweb" and cache_dir is not None:
        anatomy_kwargs["cache_dir"] = cache_dir
    if anatomy == "phantom":
        anatomy_kwargs["shape"] = (size, size)
    source = load_anatomy(anatomy, split, **anatomy_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path if outputs is None else outputs.reserve(path.name)
    groups = [
        T1MappingDataset(
            source, length=n_per_acceleration, seed=seed + 1000 * j, image_size=size, n_coils=coils,
            times=tuple(times), acceleration=float(acc),
        )
        for j, acc in enumerate(accelerations)
    ]
    attrs = {**args, "fingerprint": fingerprint, "seeds": [seed + 1000 * j for j in range(len(groups))]}
    write_t1_dataset_h5(ConcatDataset(groups), target, attrs)
    return path


def simulate(args: argparse.Namespace) -> None:
    """``pinqi simulate``: every requested split written together (or reused), or none."""
    from simulation.sequence_checks import MAX_SATURATION_TIME, check_time

    check_time("--times", list(args.times), limit=MAX_SATURATION_TIME)
    if args.download_brainweb:
        from simulation import download_brainweb

        paths = download_brainweb(cache_dir=args.cache_dir)
        print(f"BrainWeb: {len(paths)} subjects cached")
    if args.format == "ismrmrd":
        _simulate_raw(args)
        return
    if args.anatomy == "tubes":
        raise ValueError("--anatomy tubes needs --format ismrmrd")
    with OutputSet(args.out) as outputs:
        paths = [
            simulate_split(
                args.out, split, anatomy=args.anatomy, n_per_acceleration=args.n_per_acceleration,
                accelerations=tuple(args.accelerations), size=args.size, coils=args.coils,
                times=tuple(args.times), seed=args.seed, cache_dir=args.cache_dir, outputs=outputs,
            )
            for split in args.splits
        ]
    for split, path in zip(args.splits, paths):
        print(f"{split}: {path}")


def _simulate_raw(args: argparse.Namespace) -> None:
    """``pinqi simulate --format ismrmrd``: ``<split>_<acc>x_<i>.h5`` raw files, all written or none."""
    from ..io.examples import write_example_scan

    if args.anatomy not in ("mni152", "tubes"):
        raise ValueError(f"--format ismrmrd simulates --anatomy mni152 or tubes; got {args.anatomy!r}")
    kind = "phantom" if args.anatomy == "tubes" else "brain"
    split_seed = {"train": 0, "val": 1, "test": 2}
    with OutputSet(args.out) as outputs:
        for split in args.splits:
            for j, acc in enumerate(args.accelerations):
                for i in range(args.n_per_acceleration):
                    name = f"{split}_{acc:g}x_{i:03d}.h5"
                    write_example_scan(outputs.reserve(name), kind, size=args.size, n_coils=args.coils,
                                       times=tuple(args.times), acceleration=acc,
                                       seed=args.seed + 100_000 * split_seed[split] + 1000 * j + i)
    print(f"wrote {len(outputs.written)} ISMRMRD files to {args.out}")


# -- train -------------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> None:
    if args.task == "w2q":
        from ..w2q.training import train_w2q
        from .config_file import check_w2q_config_file

        check_w2q_config_file(args.preset, args.config)
        train_w2q(args)
        return
    from ..training import Trainer
    from .checks import check_out
    from .config_file import read_train_config

    config = read_train_config(args.preset, args.config)
    if args.steps is not None:
        config = config.replace(steps=args.steps)
    out = check_out(args.out or Path("runs") / f"pinqi-{args.preset}")
    trainer = Trainer(config, out, resume=args.resume, progress=not args.no_progress,
                      overwrite=getattr(args, "overwrite", False))
    if getattr(args, "init", None) is not None and trainer.step == 0:
        trainer.initialise_from(args.init)
    records = trainer.run(max_seconds=None if getattr(args, "minutes", None) is None else 60 * args.minutes)
    if trainer.ctx.is_main and records:
        print(f"trained to step {trainer.step}; last loss {records[-1]['loss']:.4g}; "
              f"skipped {trainer.skipped}; checkpoint {out / 'checkpoint.pt'}")


# -- evaluate ----------------------------------------------------------------------------------
def _batches(data: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, torch.Tensor]]:
    n = data["kspace"].shape[0]
    return [{k: v[i : i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]


def evaluation_methods(model: Any, times: torch.Tensor, baselines: list[str]) -> dict[str, Any]:
    """Method name -> callable(batch) -> parameters (B, 3, Y, X)."""
    from simulation import SaturationRecovery

    from ..baselines.classical import cg_sense_fit, zero_filled_fit

    q = SaturationRecovery(times)
    methods: dict[str, Any] = {}
    if model is not None:
        methods["PINQI"] = lambda b: model(b["kspace"], b["csm"], b["mask"], signal_model=q).final
    if "cg-sense" in baselines:
        methods["CG-SENSE + fit"] = lambda b: cg_sense_fit(b["kspace"], b["csm"], b["mask"], q).params
    if "zero-filled" in baselines:
        methods["zero-filled + fit"] = lambda b: zero_filled_fit(b["kspace"], b["csm"], b["mask"], q).params
    return methods


def run_evaluation(
    checkpoint: Path | None,
    data_path: Path,
    out: Path,
    baselines: list[str],
    batch_size: int = 4,
) -> dict[str, Any]:
    """Evaluate PINQI (when ``checkpoint`` is given) and baselines; writes metrics.json, metrics.md
    and maps.png into ``out`` all together (:class:`~pinqi.io.outputs.OutputSet`)."""
    from simulation.h5io import read_t1_dataset_h5

    from ..evaluation import evaluate_method, save_map_figure
    from ..io.outputs import write_json
    from ..training import load_pinqi
    from .checks import check_out, describe

    check_out(out)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {batch_size}")
    for label, path in (("checkpoint", checkpoint), ("--data", data_path)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{label} {path} does not exist or is not a file")
    model = None if checkpoint is None else load_pinqi(checkpoint)
    try:
        data = read_t1_dataset_h5(data_path)
    except (OSError, KeyError) as error:
        raise ValueError(f"--data {data_path} is not a readable test set of `pinqi simulate` ({describe(error)})") from None
    times = data["times"][0] if data["times"].ndim == 2 else data["times"]
    if model is not None:
        if model.n_times != times.numel():
            raise ValueError(
                f"{checkpoint} was trained with {model.n_times} saturation times; {data_path} has {times.numel()}"
            )
    batches = _batches(data, batch_size)
    results: dict[str, Any] = {}
    first_preds: dict[str, torch.Tensor] = {}
    for name, method in evaluation_methods(model, times, baselines).items():
        outcome = evaluate_method(method, batches)
        first_preds[name] = outcome.pop("predictions")[0][0]
        results[name] = outcome
    rows = []
    for name, outcome in results.items():
        for acc, metrics in outcome["per_acceleration"].items():
            rows.append(
                {
                    "method": name,
                    "acceleration": acc,
                    "T1 nRMSE": f"{metrics['nrmse']['mean']:.4f} ± {metrics['nrmse']['sd']:.4f}",
                    "T1 MAE [s]": f"{metrics['mae']['mean']:.4f} ± {metrics['mae']['sd']:.4f}",
                    "T1 SSIM": f"{metrics['ssim']['mean']:.4f} ± {metrics['ssim']['sd']:.4f}",
                    "s/slice": round(outcome["seconds_per_slice"], 3),
                }
            )
    table = print_table(rows)
    acc0 = float(data["acceleration"][0])
    with OutputSet(out) as outputs:
        write_json(outputs.reserve("metrics.json"), {"data": str(data_path), "checkpoint": str(checkpoint), "results": results})
        outputs.reserve("metrics.md").write_text(table + "\n")
        save_map_figure(outputs.reserve("maps.png"), data["params"][0], first_preds, data["brain_mask"][0],
                        title=f"test slice 0, {acc0:g}x")
    return results


def evaluate(args: argparse.Namespace) -> None:
    out = args.out or args.checkpoint.parent / "evaluation"
    run_evaluation(args.checkpoint, args.data, out, list(args.baselines), args.batch_size)
    print(f"wrote {out / 'metrics.json'} and {out / 'maps.png'}")


# -- demo --------------------------------------------------------------------------------------
DEMO_STEPS = 150


def demo(args: argparse.Namespace) -> None:
    """Simulate a small test set, train the cpu preset briefly, evaluate against CG-SENSE + fit."""
    from ..config import cpu_preset
    from ..training import Trainer

    out: Path = args.out
    started = time.perf_counter()
    config = cpu_preset()
    steps = args.steps if args.steps is not None else DEMO_STEPS
    config = config.replace(steps=steps, warmup_steps=min(config.warmup_steps, max(1, steps // 5)),
                            pretrain_steps=min(config.pretrain_steps, steps // 3),
                            checkpoint_every=max(1, steps // 3))
    print(f"[1/3] simulating a test set ({config.image_size}x{config.image_size}, {config.n_coils} coils) ...")
    test_path = simulate_split(
        out / "data", "test", anatomy=config.anatomy, n_per_acceleration=4,
        size=config.image_size, coils=config.n_coils, times=config.times,
    )
    print(f"[2/3] training PINQI for {config.steps + config.pretrain_steps} steps (cpu preset, shortened) ...")
    trainer = Trainer(config, out / "train", resume=True)
    trainer.run()
    print("[3/3] evaluating PINQI against CG-SENSE + pixel-wise fit ...")
    run_evaluation(out / "train" / "checkpoint.pt", test_path, out / "evaluation", ["cg-sense"])
    print(f"done in {time.perf_counter() - started:.0f} s; T1 maps: {out / 'evaluation' / 'maps.png'}")
