"""Signal models: hand-computed values, limits, the FLAIR null, autograd, per-sample protocols, errors."""

from __future__ import annotations

import math

import pytest
import torch

from simulation.sequence_checks import check_sequence
from simulation.signal_models import (
    FLAIR,
    InversionPreparedGRE,
    InversionRecovery,
    SaturationRecovery,
    SignalModel,
    SpinEcho,
    SpoiledGRE,
)

F64 = torch.float64


def weighted_p(pd: float, t1: float, t2: float, shape: tuple[int, int] = (1, 1)) -> torch.Tensor:
    return torch.tensor([pd, t1, t2], dtype=F64).reshape(1, 3, 1, 1).expand(1, 3, *shape).clone()


def t1_p(re: float, im: float, r1: float) -> torch.Tensor:
    return torch.tensor([re, im, r1], dtype=F64).reshape(1, 3, 1, 1)


# ------------------------------------------------------------------ hand-computed values
def test_saturation_recovery_values() -> None:
    q = SaturationRecovery(torch.tensor([0.5, 2.0]))
    y = q(t1_p(0.8, 0.3, 2.0))
    assert y.shape == (1, 2, 1, 1) and y.dtype == torch.complex128
    for i, t in enumerate((0.5, 2.0)):
        f = 1 - math.exp(-t * 2.0)
        assert y[0, i, 0, 0].real.item() == pytest.approx(0.8 * f, rel=1e-12)
        assert y[0, i, 0, 0].imag.item() == pytest.approx(0.3 * f, rel=1e-12)
    assert SaturationRecovery([0.5])(t1_p(1, 0, 1).float()).dtype == torch.complex64


def test_inversion_recovery_values() -> None:
    p = t1_p(1.0, -0.5, 1 / 1.2)
    y = InversionRecovery([0.3, 2.0])(p)
    expected = [1 - 2 * math.exp(-0.3 / 1.2), 1 - 2 * math.exp(-2.0 / 1.2)]
    assert torch.allclose(y[0, :, 0, 0].real, torch.tensor(expected, dtype=F64))
    assert torch.allclose(y[0, :, 0, 0].imag, -0.5 * torch.tensor(expected, dtype=F64))
    y_tr = InversionRecovery([0.3], tr=3.0)(p)
    assert y_tr[0, 0, 0, 0].real.item() == pytest.approx(1 - 2 * math.exp(-0.25) + math.exp(-2.5), rel=1e-12)
    assert y[0, 0, 0, 0].real.item() < 0  # signed, no magnitude


def test_weighted_values() -> None:
    p = weighted_p(0.9, 0.8, 0.08)
    se = SpinEcho(2.0, 0.1, te_correction=1.2)(p).item()
    assert se == pytest.approx(0.9 * (1 - math.exp(-2.0 / 0.8)) * math.exp(-0.12 / 0.08), rel=1e-12)

    flair = FLAIR(9.0, 0.09, 2.5, magnitude_eps=0.0)(weighted_p(1.0, 1.0, 0.1)).item()
    assert flair == pytest.approx(abs(1 - 2 * math.exp(-2.5) + math.exp(-9.0)) * math.exp(-0.9), rel=1e-12)
    smooth = FLAIR(9.0, 0.09, 2.5)(weighted_p(1.0, 1.0, 0.1)).item()
    assert smooth == pytest.approx(math.sqrt(flair**2 + 1e-6), rel=1e-12) and 0 <= smooth - flair < 1e-6 / (2 * flair)

    a = math.radians(30)
    e1 = math.exp(-0.02 / 0.8)
    gre = SpoiledGRE(0.02, 0.005, 30.0)(p).item()
    assert gre == pytest.approx(0.9 * math.sin(a) * (1 - e1) * math.exp(-0.005 / 0.08) / (1 - math.cos(a) * e1), rel=1e-12)

    mp = InversionPreparedGRE(2.3, 0.003, 0.9, 9.0, magnitude_eps=0.0)(p).item()
    mz = 1 - 2 * math.exp(-0.9 / 0.8) + math.exp(-2.3 / 0.8)
    assert mp == pytest.approx(abs(0.9 * math.sin(math.radians(9)) * math.exp(-0.003 / 0.08) * mz), rel=1e-12)
    signed = InversionPreparedGRE(2.3, 0.003, 0.3, 9.0, magnitude=False)(p).item()
    assert signed < 0  # before the null the signed signal is negative


def test_multi_contrast_broadcast_of_sequence_parameters() -> None:
    """One TR with three TEs gives three contrasts, each the single-TE value."""
    p = torch.rand(2, 3, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.2
    tes = [0.01, 0.05, 0.1]
    y = SpinEcho(2.0, tes)(p)
    assert y.shape == (2, 3, 3, 3)
    for i, te in enumerate(tes):
        torch.testing.assert_close(y[:, i : i + 1], SpinEcho(2.0, te)(p))


# ------------------------------------------------------------------ limits and the FLAIR null
def test_limits() -> None:
    p = weighted_p(0.7, 0.5, 0.06)
    assert SpinEcho(30.0, 0.04)(p).item() == pytest.approx(0.7 * math.exp(-0.04 / 0.06), rel=1e-12)
    assert SpinEcho(1.5, 0.0)(p).item() == pytest.approx(0.7 * (1 - math.exp(-1.5 / 0.5)), rel=1e-12)
    y = SaturationRecovery([30.0])(t1_p(0.6, -0.2, 1.0))
    assert y.item() == pytest.approx(complex(0.6, -0.2), rel=1e-12)
    # Ernst angle maximises the spoiled-GRE signal
    tr, t1 = 0.01, 1.0
    ernst = math.degrees(math.acos(math.exp(-tr / t1)))
    angles = torch.tensor([ernst - 2, ernst, ernst + 2], dtype=F64)
    s = SpoiledGRE(tr, 0.0, angles)(weighted_p(1.0, t1, 0.05))[0, :, 0, 0]
    assert s[1] > s[0] and s[1] > s[2]


def test_flair_null() -> None:
    t1 = 1.3
    ti_null = t1 * math.log(2)
    p = weighted_p(1.0, t1, 0.1)
    assert FLAIR(30.0, 0.1, ti_null)(p).item() == pytest.approx(1e-3, abs=1e-12)  # the smooth floor ε
    tis = torch.linspace(0.5, 1.3, 81, dtype=F64)
    curve = FLAIR(30.0, 0.1, tis)(p)[0, :, 0, 0]
    assert abs(tis[curve.argmin()].item() - ti_null) <= 0.01
    assert curve.min() >= 0
    # away from the null the smooth magnitude is |x| to within ε²/(2|x|), not shifted by ε
    exact = FLAIR(30.0, 0.1, tis, magnitude_eps=0.0)(p)[0, :, 0, 0]
    far = exact > 0.02
    assert bool(far.any()) and float(((curve - exact)[far] / exact[far]).abs().max()) < 2e-3
    # the smooth magnitude has a zero, finite derivative with respect to T1 at the null
    pg = p.clone().requires_grad_(True)
    FLAIR(30.0, 0.1, ti_null)(pg).sum().backward()
    assert torch.isfinite(pg.grad).all() and pg.grad.abs().max() < 1e-6


# ------------------------------------------------------------------ autograd
def _rand_p(kind: str, b: int = 2, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    u = torch.rand(b, 3, n, n, dtype=F64, generator=g)
    if kind == "t1":
        return torch.stack([u[:, 0] * 2 - 1, u[:, 1] * 2 - 1, 0.3 + 2 * u[:, 2]], 1)
    return torch.stack([0.5 + u[:, 0], 0.6 + u[:, 1], 0.05 + 0.1 * u[:, 2]], 1)


CASES = [
    ("sr", lambda t: SaturationRecovery(t[0]), [[0.2, 0.6, 1.5]]),
    ("ir", lambda t: InversionRecovery(t[0], tr=t[1]), [[0.1, 0.5, 1.1], [3.0]]),
    ("se", lambda t: SpinEcho(t[0], t[1], te_correction=t[2]), [[2.0, 3.0], [0.02, 0.08], [1.1]]),
    ("flair", lambda t: FLAIR(t[0], t[1], t[2]), [[9.0], [0.09], [2.0]]),
    ("gre", lambda t: SpoiledGRE(t[0], t[1], t[2]), [[0.02], [0.004, 0.01], [15.0]]),
    ("mprage", lambda t: InversionPreparedGRE(t[0], t[1], t[2], t[3]), [[2.3], [0.003], [1.2], [8.0]]),
]


@pytest.mark.parametrize("name,build,seq", CASES, ids=[c[0] for c in CASES])
def test_gradcheck_parameters_and_sequence(name: str, build, seq) -> None:
    p = _rand_p("t1" if name in ("sr", "ir") else "w").requires_grad_(True)
    seq_t = [torch.tensor(s, dtype=F64, requires_grad=True) for s in seq]

    def f(p_: torch.Tensor, *s: torch.Tensor) -> torch.Tensor:
        return build(list(s))(p_)

    assert torch.autograd.gradcheck(f, (p, *seq_t), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradgradcheck_flair_at_null() -> None:
    """Twice differentiable at the null thanks to the smooth magnitude (Hessian-based fits)."""
    t1 = torch.tensor([[[[1.0]]], [[[2.0]]]], dtype=F64)
    p = torch.cat([torch.ones_like(t1), t1, torch.full_like(t1, 0.1)], 1).requires_grad_(True)
    q = FLAIR(30.0, 0.08, math.log(2))  # null exactly at T1 = 1 for the first sample
    assert torch.autograd.gradgradcheck(lambda p_: q(p_), (p,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradient_reaches_saturation_times() -> None:
    times = torch.tensor([0.2, 0.8], requires_grad=True)
    q = SaturationRecovery(times)
    assert q.times is times and q.sequence_parameters()["times"] is times
    q(torch.rand(1, 3, 4, 4) + 0.1).abs().sum().backward()
    assert times.grad is not None and (times.grad.abs() > 0).all()


# ------------------------------------------------------------------ per-sample protocols
def test_per_sample_protocol_matches_individual_models() -> None:
    p = _rand_p("t1", b=3)
    times = torch.tensor([[0.1, 0.5, 1.0], [0.2, 0.4, 2.0], [0.3, 0.9, 1.7]], dtype=F64)
    y = SaturationRecovery(times)(p)
    assert y.shape == (3, 3, 3, 3)
    for b in range(3):
        torch.testing.assert_close(y[b : b + 1], SaturationRecovery(times[b])(p[b : b + 1]))

    pw = _rand_p("w", b=2)
    tr, te, ti = torch.tensor([8.0, 10.0]), torch.tensor([0.08, 0.12]), torch.tensor([2.2, 2.6])
    q = FLAIR(tr, te, ti, per_sample=True)
    assert q.n_contrasts == 1 and q.batch_size == 2
    yw = q(pw)
    assert yw.shape == (2, 1, 3, 3)
    for b in range(2):
        torch.testing.assert_close(yw[b : b + 1], FLAIR(tr[b].item(), te[b].item(), ti[b].item())(pw[b : b + 1]))
    # (B, T) weighted protocol: 2 samples x 2 contrasts
    y2 = SpinEcho(torch.tensor([[2.0, 3.0], [1.0, 4.0]]), 0.05)(pw)
    torch.testing.assert_close(y2[1, 1:2], SpinEcho(4.0, 0.05)(pw[1:2])[0])


# ------------------------------------------------------------------ attributes
@pytest.mark.parametrize("q", [SaturationRecovery([0.5]), InversionRecovery([0.5]), SpinEcho(2.0, 0.1),
                               FLAIR(9.0, 0.1, 2.5), SpoiledGRE(0.02, 0.005, 20), InversionPreparedGRE(2.3, 0.003, 0.9, 9)])
def test_attributes(q: SignalModel) -> None:
    assert isinstance(q, SignalModel) and isinstance(q, torch.nn.Module)
    lo, hi = q.bounds
    assert q.n_parameters == 3 == len(q.parameter_names) == len(q.parameter_units) == len(lo) == len(hi)
    assert all(a <= v <= b for a, v, b in zip(lo, q.initial_value, hi))
    y = q(torch.tensor(q.initial_value).reshape(1, 3, 1, 1).expand(2, 3, 4, 5))
    assert y.shape == (2, 1, 4, 5) and torch.isfinite(torch.view_as_real(y) if y.is_complex() else y).all()
    assert y.is_complex() == q.complex_output


def test_t1_attributes_follow_the_paper() -> None:
    q = SaturationRecovery([0.5])
    assert q.parameter_names == ("re_m0", "im_m0", "r1") and q.parameter_units == ("a.u.", "a.u.", "1/s")
    assert q.bounds == ((-2.0, -2.0, -1.0), (2.0, 2.0, 20.0))
    assert SpinEcho(2.0, 0.1).parameter_names == ("pd", "t1", "t2")


# ------------------------------------------------------------------ errors
def test_bad_p_raises() -> None:
    q = SaturationRecovery([0.5, 1.0])
    with pytest.raises(ValueError, match=r"P = 3.*got \(2, 2, 4, 4\)"):
        q(torch.rand(2, 2, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        q(torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="real floating"):
        q(torch.rand(2, 3, 4, 4, dtype=torch.complex64))
    with pytest.raises(TypeError, match="real floating"):
        q(torch.ones(2, 3, 4, 4, dtype=torch.int64))
    per_sample = SaturationRecovery(torch.rand(3, 2) + 0.1)
    with pytest.raises(ValueError, match=r"B = 3.*batch 2"):
        per_sample(torch.rand(2, 3, 4, 4))


def test_bad_sequence_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        SaturationRecovery(torch.rand(2, 2, 2) + 0.1)
    with pytest.raises(ValueError, match="broadcast"):
        SpinEcho([2.0, 3.0, 4.0], [0.01, 0.02])
    with pytest.raises(ValueError, match="empty"):
        SaturationRecovery([])
    with pytest.raises(TypeError):
        SaturationRecovery("abc")


BAD = [
    (lambda: SaturationRecovery([0.5, -0.1]), "saturation times must be > 0"),
    (lambda: SaturationRecovery([0.0, 1.0]), "saturation times must be > 0"),
    (lambda: SaturationRecovery([float("nan")]), "saturation times must be finite"),
    (lambda: SaturationRecovery([float("inf")]), "saturation times must be finite"),
    (lambda: SaturationRecovery([100.0, 500.0]), "looks like milliseconds; times are in seconds"),
    (lambda: InversionRecovery([0.5, 3.5], tr=3.0), "inversion times must be shorter than TR"),
    (lambda: InversionRecovery([0.5], tr=0.0), "TR must be > 0"),
    (lambda: SpinEcho(2000.0, 10.0), "TR = 2000 looks like milliseconds"),
    (lambda: SpinEcho(2.0, 120.0), "TE = 120 looks like milliseconds"),
    (lambda: SpinEcho(0.1, 0.1), "TE must be shorter than TR"),
    (lambda: SpinEcho(0.1, 0.2), "TE must be shorter than TR"),
    (lambda: SpinEcho(2.0, -0.01), "TE must be >= 0"),
    (lambda: SpinEcho(0.0, 0.0), "TR must be > 0"),
    (lambda: SpinEcho(2.0, float("nan")), "TE must be finite"),
    (lambda: SpinEcho(2.0, 0.1, te_correction=0.0), "te_correction must be > 0"),
    (lambda: FLAIR(9.0, 0.1, 9.0), "TI must be shorter than TR"),
    (lambda: FLAIR(9.0, 0.1, 9.5), "TI must be shorter than TR"),
    (lambda: SaturationRecovery([500.0, 1000.0, 2000.0]), r"saturation times = \[500, 1000, 2000\] .*looks like milliseconds.*<= 30 s"),
    (lambda: SpoiledGRE(25.0, 5.0, 20.0), r"TR = 25 for a spoiled gradient echo looks like milliseconds.*<= 1 s, e.g. 0.025"),
    (lambda: SpoiledGRE(0.025, 5.0, 20.0), r"TE = 5 looks like milliseconds.*<= 1 s"),
    (lambda: SpoiledGRE(0.02, 0.005, 0.35), r"flip_angle_deg = 0.35 looks like radians"),
    (lambda: SpinEcho(40.0, 0.1), r"TR = 40 looks like milliseconds.*<= 30 s"),
    (lambda: InversionRecovery([0.5, 12.0]), r"inversion times = .* looks like milliseconds.*<= 10 s"),
    (lambda: FLAIR(9.0, 0.1, 2500.0), r"TI = 2500 looks like milliseconds"),
    (lambda: FLAIR(9.0, 0.1, 0.0), "TI must be > 0"),
    (lambda: FLAIR(9000.0, 100.0, 2500.0), "looks like milliseconds"),
    (lambda: FLAIR(9.0, 0.1, 2.5, magnitude_eps=-1.0), "magnitude_eps must be >= 0"),
    (lambda: SpoiledGRE(0.02, 0.005, 0.0), r"flip_angle_deg must be in \(0, 180\] degrees"),
    (lambda: SpoiledGRE(0.02, 0.005, 190.0), r"flip_angle_deg must be in \(0, 180\] degrees"),
    (lambda: SpoiledGRE(0.02, 0.005, -10.0), r"flip_angle_deg must be in \(0, 180\] degrees"),
    (lambda: SpoiledGRE(0.02, 0.005, float("inf")), "flip_angle_deg must be finite"),
    (lambda: SpoiledGRE(0.02, 0.03, 10.0), "TE must be shorter than TR"),
    (lambda: InversionPreparedGRE(2.3, 0.003, 2.5, 9.0), "TI must be shorter than TR"),
    (lambda: InversionPreparedGRE(2.3, 0.003, 0.9, 181.0), "flip_angle_deg"),
    (lambda: SpinEcho(torch.tensor([2.0, 0.05]), torch.tensor([0.01, 0.08])), r"TE = 0.08 s >= TR = 0.05 s"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_sequence_parameters_raise(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_check_sequence_dispatch() -> None:
    check_sequence("FLAIR", tr=9.0, te=0.09, ti=2.5)
    check_sequence("mprage", tr=2.3, te=0.003, ti=0.9, flip_angle_deg=9)
    with pytest.raises(ValueError, match="looks like milliseconds"):
        check_sequence("se", tr=500, te=15)
    with pytest.raises(ValueError, match="unknown sequence kind 'epi'"):
        check_sequence("epi", tr=1.0)
    with pytest.raises(TypeError, match="bad parameters for sequence 'gre'"):
        check_sequence("gre", tr=0.02, te=0.005)
