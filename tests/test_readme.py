"""The README's library example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_library_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    p, p_fit, recon = namespace["p"], namespace["p_fit"], namespace["recon"]
    assert recon.shape == (1, 5, 64, 64)
    assert p_fit.shape == p.shape and torch.isfinite(p_fit).all()
    inside = p[:, 0] > 0.5
    t1_true, t1_fit = 1 / p[:, 2][inside], 1 / p_fit[:, 2][inside]
    assert ((t1_fit - t1_true).abs() / t1_true).median() < 0.1
