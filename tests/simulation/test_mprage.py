"""MP-RAGE signal model against a step-by-step Bloch recursion, its PD linearity and its checks."""

from __future__ import annotations

import math

import pytest
import torch

from simulation.mprage import MPRAGE
from simulation.sequence_checks import check_sequence


def bloch_mprage(pd: float, t1: float, t2: float, tr: float, te: float, ti: float, fa: float, tau: float,
                 n: int, shots: int = 60) -> float:
    """Signed signal of the centre readout after ``shots`` inversions, simulated event by event."""
    mz, alpha, kc = pd, math.radians(fa), n // 2
    t0 = ti - kc * tau
    signal = float("nan")

    def relax(m: float, t: float) -> float:
        return pd + (m - pd) * math.exp(-t / t1)

    for _ in range(shots):
        mz = -mz  # inversion
        mz = relax(mz, t0)
        for i in range(n):
            if i == kc:
                signal = mz * math.sin(alpha) * math.exp(-te / t2)
            mz = mz * math.cos(alpha)
            mz = relax(mz, tau if i < n - 1 else tr - t0 - (n - 1) * tau)
    return signal


CASES = [  # (PD, T1, T2), (TR_prep, TE, TI, FA, tau, N)
    ((0.7, 0.85, 0.07), (2.3, 0.003, 0.9, 9.0, 0.007, 176)),
    ((0.8, 1.3, 0.09), (1.9, 0.0025, 0.8, 7.0, 0.006, 160)),
    ((1.0, 4.0, 1.8), (2.5, 0.004, 1.1, 10.0, 0.008, 256)),
    ((0.75, 0.6, 0.05), (2.0, 0.002, 1.0, 12.0, 0.005, 151)),
]


@pytest.mark.parametrize(("tissue", "protocol"), CASES)
def test_mprage_matches_bloch_recursion(tissue: tuple[float, ...], protocol: tuple[float, ...]) -> None:
    p = torch.tensor(tissue, dtype=torch.float64).view(1, 3, 1, 1)
    model = MPRAGE(*protocol, magnitude=False)
    got = model(p).item()
    want = bloch_mprage(*tissue, *protocol[:6])  # type: ignore[misc]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert MPRAGE(*protocol, magnitude_eps=0.0)(p).item() == pytest.approx(abs(want), rel=1e-9, abs=1e-12)


def test_mprage_wm_brighter_than_gm_brighter_than_csf() -> None:
    p = torch.tensor([[0.7, 0.85, 0.07], [0.8, 1.3, 0.09], [1.0, 4.0, 1.8]], dtype=torch.float64).T.reshape(1, 3, 1, 3)
    s = MPRAGE(2.3, 0.003, 0.9, 9.0, 0.007, 176, magnitude_eps=0.0)(p).flatten()
    assert s[0] > s[1] > s[2]


def test_mprage_linear_in_pd_and_declares_it() -> None:
    model = MPRAGE(torch.tensor([2.3, 2.0]), 0.003, torch.tensor([0.9, 1.0]), 9.0, 0.007, 176, magnitude=False)
    assert model.linear_parameters == (0,)
    assert MPRAGE(2.3, 0.003, 0.9, 9.0, 0.007, 176).linear_parameters == ()
    p = torch.tensor([0.7, 0.85, 0.07], dtype=torch.float64).view(1, 3, 1, 1)
    q = p.clone()
    q[:, 0] *= 3.5
    torch.testing.assert_close(model(q), 3.5 * model(p))
    assert model(p).shape == (1, 2, 1, 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tr": 2300.0}, "milliseconds"),
    ({"ti": 900.0}, "milliseconds"),
    ({"tr_excitation": 7.0}, "milliseconds"),
    ({"n_readouts": 176.5}, "whole number"),
    ({"ti": 0.5}, "TI must exceed"),
    ({"tr": 1.5}, "before the next inversion"),
    ({"flip_angle_deg": 0.15}, "radians"),
    ({"te": 0.008}, "TE must be shorter than tr_excitation"),
])
def test_mprage_refuses_implausible_protocols(kwargs: dict[str, float], message: str) -> None:
    protocol = {"tr": 2.3, "te": 0.003, "ti": 0.9, "flip_angle_deg": 9.0, "tr_excitation": 0.007, "n_readouts": 176}
    protocol.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MPRAGE(**protocol)
    with pytest.raises(ValueError, match=message):
        check_sequence("mprage", **protocol)
