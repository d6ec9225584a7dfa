"""``pinqi demo`` with the shipped model: raw files written, a table of T1 errors, the figure."""

from __future__ import annotations

from pathlib import Path

from pinqi.cli import main


def test_demo_runs_the_main_job(tmp_path: Path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| phantom") or line.startswith("| brain")]
    assert len(rows) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_maps.pdf", "demo_maps.png", "raw"]
    assert len(list((tmp_path / "raw").glob("*.h5"))) == 11
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
