"""Training: overfitting one sample, exact resume, checkpoints, a 2-process gloo DDP run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pinqi.common.checkpoint import load_checkpoint, save_checkpoint
from pinqi.common.trainer import learning_rate_factor
from pinqi.config import TrainConfig, load_train_config, micro_preset
from pinqi.training import Trainer, build_model, load_pinqi

ROOT = Path(__file__).resolve().parents[2]


def test_learning_rate_schedule():
    assert learning_rate_factor(0, 10, 100) == pytest.approx(0.1)
    assert learning_rate_factor(9, 10, 100) == pytest.approx(1.0)
    assert learning_rate_factor(10, 10, 100) == pytest.approx(1.0)
    assert learning_rate_factor(55, 10, 100) == pytest.approx(0.5)
    assert learning_rate_factor(100, 10, 100) == pytest.approx(0.0)


def test_config_round_trip_and_overrides(tmp_path: Path):
    config = micro_preset()
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    override = tmp_path / "o.json"
    override.write_text(json.dumps({"steps": 7, "model": {"n_iterations": 1}}))
    loaded = load_train_config("micro", override)
    assert loaded.steps == 7 and loaded.model.n_iterations == 1
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"stepz": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        load_train_config("tpu")


@pytest.mark.slow
def test_loss_falls_tenfold_when_overfitting_one_sample(tmp_path: Path):
    config = micro_preset().replace(batch_size=1, steps=100, warmup_steps=5, lr_networks=4e-3, checkpoint_every=1000)
    trainer = Trainer(config, tmp_path, progress=False)
    sample = trainer.dataset[0]
    batch = {k: v[None] for k, v in sample.items()}
    losses = [trainer.train_step(step, batch)["loss"] for step in range(config.steps)]
    assert min(losses[-5:]) < losses[0] / 10, losses[::10]
    assert trainer.skipped == 0


def test_resume_replays_the_same_losses(tmp_path: Path):
    config = micro_preset().replace(steps=4, checkpoint_every=2)
    full = Trainer(config, tmp_path / "full", progress=False).run()
    interrupted = Trainer(config, tmp_path / "part", progress=False)
    interrupted.run(stop_after=2)  # "killed" after the step-2 checkpoint
    resumed = Trainer(config, tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 2
    rest = resumed.run()
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[2:]]
    logged = [json.loads(line)["step"] for line in (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2, 3]


def test_resume_with_another_configuration_is_refused(tmp_path: Path):
    config = micro_preset().replace(steps=2, checkpoint_every=2)
    Trainer(config, tmp_path, progress=False).run()
    with pytest.raises(ValueError, match="different configuration"):
        Trainer(config.replace(steps=3), tmp_path, resume=True, progress=False)


def test_checkpoint_is_atomic_and_typed(tmp_path: Path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"kind": "pinqi", "x": torch.ones(2)})
    assert load_checkpoint(path, kind="pinqi")["x"].sum() == 2
    with pytest.raises(ValueError, match="expected a 'w2q' checkpoint"):
        load_checkpoint(path, kind="w2q")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_checkpoint_of_another_configuration_is_refused(tmp_path: Path):
    config = micro_preset().replace(steps=1, checkpoint_every=1)
    Trainer(config, tmp_path, progress=False).run()
    model = load_pinqi(tmp_path / "checkpoint.pt")
    assert model.train_config == config and not model.training
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    other = json.loads(payload["config"])
    other["model"]["parameter_features"] = [4, 8]
    payload["config"] = json.dumps(other)
    save_checkpoint(tmp_path / "other.pt", {k: v for k, v in payload.items() if k != "format_version"})
    with pytest.raises(ValueError, match="do not fit"):
        load_pinqi(tmp_path / "other.pt")


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    override = tmp_path / "ddp.json"
    override.write_text(json.dumps({"steps": 2, "batch_size": 2, "checkpoint_every": 2}))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "pinqi", "train", "--preset", "micro", "--config", str(override),
        "--out", str(tmp_path / "run"), "--no-progress",
    ]
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt", kind="pinqi")["step"] == 2
    # two processes with half the batch each take the same steps as one process with all of it
    config = load_train_config("micro", override)
    single = Trainer(config, tmp_path / "single", progress=False).run()
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in single], rel=1e-5)


def test_existing_run_folder_needs_resume_or_overwrite(tmp_path: Path):
    config = micro_preset().replace(steps=1, checkpoint_every=1)
    Trainer(config, tmp_path, progress=False).run()
    with pytest.raises(ValueError, match="--resume .* --overwrite"):
        Trainer(config, tmp_path, progress=False)
    fresh = Trainer(config, tmp_path, progress=False, overwrite=True)
    assert fresh.step == 0 and not (tmp_path / "checkpoint.pt").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        Trainer(config, tmp_path / "file", progress=False)


def test_resume_survives_a_truncated_last_log_line(tmp_path: Path):
    config = micro_preset().replace(steps=3, checkpoint_every=1)
    trainer = Trainer(config, tmp_path, progress=False)
    trainer.run(stop_after=2)
    log_path = tmp_path / "train_log.jsonl"
    log_path.write_text(log_path.read_text() + '{"step": 2, "lo')
    resumed = Trainer(config, tmp_path, resume=True, progress=False)
    resumed.run()
    steps = [json.loads(line)["step"] for line in log_path.read_text().splitlines()]
    assert steps == [0, 1, 2]


def test_non_finite_batch_is_skipped_and_counted(tmp_path: Path):
    config = micro_preset().replace(steps=1, checkpoint_every=1)
    trainer = Trainer(config, tmp_path, progress=False)
    step, batch = next(trainer.batches())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    batch["kspace"][0, 0, 0, 0, 0] = float("nan")
    record = trainer.train_step(step, batch)
    assert record["skipped"] == 1 and math.isnan(record["loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_validation_is_logged_and_best_weights_written(tmp_path: Path):
    config = micro_preset().replace(steps=2, checkpoint_every=1, validation_every=1, validation_samples=2)
    Trainer(config, tmp_path, progress=False).run()
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    values = [r["val_t1_nrmse"] for r in records]
    assert len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values)
    best = load_checkpoint(tmp_path / "best.pt", kind="pinqi")
    assert best["validation_t1_nrmse"] == min(values)
    assert load_pinqi(tmp_path / "best.pt").train_config == config


def test_build_model_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    build_model(micro_preset())
    assert torch.equal(state, torch.get_rng_state())


def test_max_seconds_stops_with_a_resumable_checkpoint(tmp_path: Path):
    config = micro_preset().replace(steps=4, checkpoint_every=100)
    trainer = Trainer(config, tmp_path, progress=False)
    records = trainer.run(max_seconds=0.0)
    assert len(records) == 1 and trainer.step == 1
    resumed = Trainer(config, tmp_path, resume=True, progress=False)
    assert resumed.step == 1
