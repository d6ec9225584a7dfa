"""benchmarks.operators runs end to end (--quick) and writes its table."""

from __future__ import annotations

from pathlib import Path


def test_operator_benchmark_quick_runs(tmp_path: Path) -> None:
    from benchmarks.operators import main

    out = tmp_path / "operators.md"
    main(["--quick", "--out", str(out)])
    text = out.read_text()
    assert "| full-path gram / 2-D FFT floor |" in text and "| fast-path gram / 2-D FFT floor |" in text
    try:
        import torchkbnufft  # noqa: F401  (the bench extra)

        assert "table fwd+adj / Toeplitz gram" in text
    except ImportError:
        assert "torchkbnufft not installed" in text
    assert "torch" in text and "threads" in text
    assert not list(tmp_path.glob("*.tmp"))
