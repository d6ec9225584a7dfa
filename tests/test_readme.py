"""The README's library example runs as written."""

import cmath
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
    # the example's k-space is in "scanner units" (x 300 e^{2i}): M0 comes back in those units, R1 unchanged
    a = 300 * cmath.exp(2j)
    plain = namespace["cg_sense_fit"](namespace["k"] / a, namespace["csm"], namespace["mask"], namespace["q"]).params
    m0, m0_plain = torch.complex(p_fit[:, 0], p_fit[:, 1]) / a, torch.complex(plain[:, 0], plain[:, 1])
    assert (m0 - m0_plain)[inside].abs().max() <= 1e-3 * m0_plain[inside].abs().max()
    assert (p_fit[:, 2] - plain[:, 2])[inside].abs().max() <= 1e-3 * plain[:, 2][inside].abs().max()
