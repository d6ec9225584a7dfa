"""The W2Q benchmark end to end on micro checkpoints, training the missing baselines itself."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import default_collate

from benchmarks import w2q as bench
from pinqi.w2q.config import load_w2q_config
from pinqi.w2q.training import W2QTrainer, load_w2q
from simulation import load_anatomy
from simulation.weighted_dataset import ProtocolRanges, WeightedImageDataset


def test_w2q_benchmark_trains_missing_baselines_and_reports(tmp_path: Path) -> None:
    W2QTrainer(load_w2q_config("micro"), tmp_path / "w2q", progress=False).run()
    embedding = tmp_path / "embedding" / "checkpoint.pt"
    unet = tmp_path / "unet" / "checkpoint.pt"
    out = tmp_path / "w2q.md"
    text = bench.main([
        "--w2q", str(tmp_path / "w2q" / "checkpoint.pt"), "--embedding", str(embedding), "--unet", str(unet),
        "--train-missing", "--preset", "micro", "--n-test", "2", "--n-slices", "1", "--n-protocols", "2",
        "--out", str(out),
    ])
    # the baselines were trained with their own model types
    assert load_w2q(embedding)[1].model_type == "embedding"
    assert load_w2q(unet)[1].model_type == "unet"
    assert out.read_text() == text
    for name in ("W2Q", "embedding net (no fit)", "plain U-Net"):
        assert f"| {name} |" in text
    results = json.loads(out.with_suffix(".json").read_text())
    assert set(results["test"]) == {"W2Q", "embedding net (no fit)", "plain U-Net"}
    assert len(results["references"]) == 3 and "| pixel fit, true scale × bias (oracle) | T1 |" in text
    assert "| W2Q told the true global scales (oracle) | T1 |" in text and "Told the true scales, its MAPE" in text
    # a second run finds the checkpoints and trains nothing
    stamp = embedding.stat().st_mtime_ns
    bench.main(["--w2q", str(tmp_path / "w2q" / "checkpoint.pt"), "--embedding", str(embedding), "--unet", str(unet),
                "--train-missing", "--preset", "micro", "--n-test", "2", "--n-slices", "1", "--n-protocols", "2",
                "--out", str(out)])
    assert embedding.stat().st_mtime_ns == stamp


def test_oracle_fit_recovers_noise_free_maps_only_with_the_bias_field() -> None:
    anatomy = load_anatomy("phantom", "test", shape=(16, 16), n_slices=2)
    data = WeightedImageDataset(anatomy, length=2, seed=3, image_size=16, partial_volume="maps",  # one tissue per pixel
                                protocols=ProtocolRanges(noise_rel=(0.0, 0.0), t1w_mprage_prob=0.0),
                                dtype=torch.float64)
    batch = default_collate([data[i] for i in range(2)])
    true_gain, global_only = bench.oracle_fits(batch).values()
    for p in ("pd", "t1", "t2"):
        assert true_gain[p]["mape"] < 1e-3, (p, true_gain[p])
    # the bias fields (up to ±35 %) are left in the data when only the global scale is divided out
    assert max(global_only[p]["mape"] for p in ("pd", "t1", "t2")) > 1.0
