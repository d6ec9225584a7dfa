"""The T1-mapping and ablation benchmarks end to end on the micro preset, and their resumability."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmarks import ablations, t1_mapping
from benchmarks.t1_common import DONE, NOTES_MARKER, micro_preset

LEARNED = ("PINQI", "DeepT1", "CoRRECT", "MANTIS", "DOPAMINE")
ALL = (*LEARNED, "CG-SENSE + fit", "zero-filled + fit")


def _training_state(run: Path) -> dict[str, tuple[int, int, int]]:
    """mtime of checkpoint and done marker, and the number of logged steps, per learned method."""
    state = {}
    for method in LEARNED:
        folder = run / method.lower()
        log = (folder / "train_log.jsonl").read_text().splitlines()
        state[method] = ((folder / "checkpoint.pt").stat().st_mtime_ns, (folder / DONE).stat().st_mtime_ns, len(log))
    return state


@pytest.mark.slow
def test_micro_benchmark_writes_every_method_and_does_not_retrain(tmp_path: Path):
    run, results = tmp_path / "run", tmp_path / "results"
    args = ["--preset", "micro", "--out", str(run), "--results", str(results), "--no-isolate"]
    t1_mapping.main(args)

    with open(results / "t1_mapping.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["method"], r["acceleration"]) for r in rows} == {(m, a) for m in ALL for a in ("4", "6", "8")}
    for row in rows:
        assert 0 < float(row["t1_nrmse_mean"]) < 10 and float(row["t1_mae_s_mean"]) > 0
        assert float(row["inference_s_per_slice"]) > 0
        if row["method"] in LEARNED:
            assert int(row["parameters"]) > 0 and float(row["train_seconds"]) > 0
    preset = micro_preset()
    for method in LEARNED:
        stats = json.loads((run / method.lower() / DONE).read_text())
        assert stats["samples_seen"] == preset.samples_seen == 4
        steps = [json.loads(line)["step"] for line in (run / method.lower() / "train_log.jsonl").read_text().splitlines()]
        assert steps == list(range(preset.total_steps))  # the same stream positions for every method
    md = (results / "t1_mapping.md").read_text()
    assert "Equal budget" in md and "4 training samples" in md
    assert all(f"| {m} | {a}x |" in md for m in ALL for a in ("4", "6", "8"))
    for png in ("t1_mapping_boxplots.png", "t1_mapping_maps.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # hand-written notes survive, and a rerun only evaluates: nothing is trained again
    (results / "t1_mapping.md").write_text(md + "\nmy notes\n")
    before = _training_state(run)
    t1_mapping.main(args)
    assert _training_state(run) == before
    regenerated = (results / "t1_mapping.md").read_text()
    assert regenerated.count(NOTES_MARKER) == 1 and regenerated.endswith(NOTES_MARKER + "\n\nmy notes\n")


def test_training_child_process_records_its_peak_memory_once(tmp_path: Path):
    preset = micro_preset()
    stats = t1_mapping.ensure_trained("MANTIS", preset, tmp_path, isolate=True)
    assert stats["method"] == "MANTIS" and stats["peak_rss_bytes"] > 50 * 2**20
    marker = tmp_path / "mantis" / DONE
    stamp = marker.stat().st_mtime_ns
    assert t1_mapping.ensure_trained("MANTIS", preset, tmp_path, isolate=True) == stats
    assert marker.stat().st_mtime_ns == stamp


def test_interrupted_baseline_resumes_exactly(tmp_path: Path):
    from benchmarks.t1_methods import BASELINES, train_learned

    micro = micro_preset()
    preset = micro.replace(train=micro.train.replace(steps=4, checkpoint_every=2))
    spec = BASELINES["DeepT1"]  # two stages: steps 0-1 image, 2-3 map
    train_learned(spec(), preset, tmp_path / "full")
    assert train_learned(spec(), preset, tmp_path / "part", stop_after=3) is None  # "killed" mid map stage
    assert not (tmp_path / "part" / DONE).exists()
    stats = train_learned(spec(), preset, tmp_path / "part")
    assert stats is not None and stats["steps"] == 4

    def losses(folder: Path) -> list[tuple[int, str, float]]:
        lines = (folder / "train_log.jsonl").read_text().splitlines()
        return [(r["step"], r["phase"], r["loss"]) for r in map(json.loads, lines)]

    full, part = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert [s[:2] for s in part] == [(0, "image"), (1, "image"), (2, "map"), (3, "map")] == [s[:2] for s in full]
    assert [s[2] for s in part] == pytest.approx([s[2] for s in full], rel=1e-5)
    with pytest.raises(ValueError, match="another configuration"):
        train_learned(spec(), micro, tmp_path / "part")


def test_ablations_micro_table(tmp_path: Path):
    results = tmp_path / "results"
    ablations.main(["--preset", "micro", "--out", str(tmp_path / "run"), "--results", str(results),
                    "--no-isolate", "--variants", "PINQI", "c", "h", "i"])
    md = (results / "ablations.md").read_text()
    for text in ("proposed PINQI (T = 2)", "(c) no parameter-space regularisation", "(h) separate regression",
                 "(i) end-to-end regression", "(i) end-to-end vs (h) separate regression"):
        assert text in md
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert set(evaluation["results"]) == {"PINQI", "c", "h", "i"}
    assert all(list(r["per_acceleration"]) == ["8"] for r in evaluation["results"].values())


def test_ablation_preset_uses_eight_times_at_8x():
    preset = ablations.ablation_preset("cpu")
    assert preset.train.times == (0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 2.0, 8.0)
    assert preset.train.acceleration == (8.0, 8.0) and preset.accelerations == (8.0,)
    assert ablations.variant_train_config("e", preset).model.fit_mode == "gradient-descent"
    assert ablations.variant_train_config("PINQI", preset) == preset.train
