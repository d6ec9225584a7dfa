"""Validation of MR sequence parameters (seconds and degrees), shared by the signal models and CLIs.

Every check raises :class:`ValueError` (or :class:`TypeError` for non-numeric input) with a
message that names the parameter, what was expected and what came. Rules:

* every value must be finite (no NaN / inf);
* TR, TI and saturation / inversion recovery times must be > 0; TE must be >= 0 (TE = 0 is
  allowed as the idealised limit of the models);
* a time above its plausible maximum looks like milliseconds (all times are in seconds) and is
  rejected — the limits the command line applies to BIDS sidecars: TR <= 30 s (<= 1 s for a
  spoiled gradient echo), TE <= 1 s, TI <= 10 s (also inversion-recovery times), saturation
  times <= 30 s; a GRE flip angle below 1 degree looks like radians;
* TE < TR (spin echo, FLAIR, spoiled GRE, inversion-prepared GRE), TI < TR (FLAIR,
  inversion-prepared GRE), recovery times < TR for inversion recovery with a finite TR;
* flip angles in (0, 180] degrees;
* MP-RAGE (:func:`check_mprage`): the readout spacing τ <= 0.1 s (else milliseconds), TE < τ, the
  readouts per inversion a whole number in [1, 4096], the first readout after the inversion
  (TI > (N // 2) τ) and the train over before the next one (TI + (N − 1 − N // 2) τ <= TR).

The checks accept python numbers, sequences and tensors (any shape); tensors are inspected
without being modified or detached from their graph.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "MAX_SECONDS",
    "MAX_TR",
    "MAX_GRE_TR",
    "MAX_TE",
    "MAX_TI",
    "MAX_SATURATION_TIME",
    "MIN_GRE_FLIP_ANGLE",
    "as_sequence_tensor",
    "check_time",
    "check_flip_angle",
    "check_shorter",
    "check_positive",
    "check_saturation_recovery",
    "check_inversion_recovery",
    "check_spin_echo",
    "check_flair",
    "check_spoiled_gre",
    "check_inversion_prepared_gre",
    "check_mprage",
    "check_sequence",
]

#: Any time above this many seconds is taken for milliseconds (the default of :func:`check_time`).
MAX_SECONDS = 100.0
#: Plausible maxima [s] of each time; a larger value is taken for milliseconds.
MAX_TR = 30.0
MAX_GRE_TR = 1.0
MAX_TE = 1.0
MAX_TI = 10.0
MAX_SATURATION_TIME = 30.0
#: A gradient-echo flip angle below this many degrees is taken for radians.
MIN_GRE_FLIP_ANGLE = 1.0
#: Plausible maximum [s] of an MP-RAGE readout spacing (RepetitionTimeExcitation).
MAX_ECHO_SPACING = 0.1
#: Plausible maximum of the readouts per inversion (NumberShots).
MAX_READOUTS = 4096


def as_sequence_tensor(name: str, value: Any) -> torch.Tensor:
    """Return ``value`` as a real floating tensor (tensors are returned as they are)."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or not value.is_floating_point():
            if value.dtype == torch.bool or value.is_complex():
                raise TypeError(f"{name} must be a real floating tensor; got dtype {value.dtype}")
            return value.to(torch.float64)
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a sequence of numbers in seconds/degrees; got {value!r}")
    try:
        out = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor; got {value!r}") from err
    return out


def _values(name: str, value: Any) -> torch.Tensor:
    t = as_sequence_tensor(name, value).detach()
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty; got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite; got {_show(t)}")
    return t


def _show(t: torch.Tensor) -> str:
    flat = t.reshape(-1)
    vals = ", ".join(f"{v:.6g}" for v in flat[:6].tolist())
    more = ", ..." if flat.numel() > 6 else ""
    return f"{vals}{more}" if flat.numel() == 1 else f"[{vals}{more}] (shape {tuple(t.shape)})"


def check_time(name: str, value: Any, *, allow_zero: bool = False, limit: float = MAX_SECONDS, what: str = "") -> None:
    """Check a time in seconds: finite, > 0 (>= 0 if ``allow_zero``) and ``<= limit`` (a larger
    value looks like milliseconds); ``what`` names the sequence in the message."""
    t = _values(name, value)
    bad = t < 0 if allow_zero else t <= 0
    if bad.any():
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {need} seconds; got {_show(t)}")
    if (t > limit).any():
        big = float(t[t > limit].reshape(-1)[0])
        raise ValueError(
            f"{name} = {_show(t)}{' for ' + what if what else ''} looks like milliseconds; times are in seconds "
            f"(expected values <= {limit:g} s, e.g. {big / 1000:g} for {big:g} ms)"
        )


def check_positive(name: str, value: Any) -> None:
    """Check a dimensionless factor: finite and > 0."""
    t = _values(name, value)
    if (t <= 0).any():
        raise ValueError(f"{name} must be > 0; got {_show(t)}")


def check_flip_angle(name: str, value: Any, *, minimum: float = 0.0) -> None:
    """Check a flip angle in degrees: finite and in (0, 180]; below ``minimum`` it looks like radians."""
    a = _values(name, value)
    if ((a <= 0) | (a > 180)).any():
        raise ValueError(f"{name} must be in (0, 180] degrees; got {_show(a)}")
    if (a < minimum).any():
        raise ValueError(f"{name} = {_show(a)} looks like radians; flip angles are in degrees (expected >= {minimum:g})")


def check_shorter(short_name: str, short: Any, long_name: str, long: Any) -> None:
    """Check ``short < long`` element-wise after broadcasting (both in seconds)."""
    a, b = _values(short_name, short), _values(long_name, long)
    try:
        a, b = torch.broadcast_tensors(a, b)
    except RuntimeError:
        raise ValueError(
            f"{short_name} and {long_name} must have broadcastable shapes; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        ) from None
    bad = a >= b
    if bad.any():
        i = int(torch.nonzero(bad.reshape(-1))[0])
        raise ValueError(
            f"{short_name} must be shorter than {long_name}; got {short_name} = "
            f"{a.reshape(-1)[i].item():.6g} s >= {long_name} = {b.reshape(-1)[i].item():.6g} s"
        )


def check_saturation_recovery(times: Any) -> None:
    """Saturation-recovery times: > 0 s, <= 30 s (else milliseconds)."""
    check_time("saturation times", times, limit=MAX_SATURATION_TIME)


def check_inversion_recovery(times: Any, tr: Any = None) -> None:
    """Inversion times (> 0 s) and, if given, a repetition time longer than each of them."""
    check_time("inversion times", times, limit=MAX_TI)
    if tr is not None:
        check_time("TR", tr, limit=MAX_TR)
        check_shorter("inversion times", times, "TR", tr)


def check_spin_echo(tr: Any, te: Any, te_correction: Any = 1.0) -> None:
    """Spin echo / TSE: 0 < TR <= 30 s, 0 <= TE <= 1 s, TE < TR, te_correction > 0."""
    check_time("TR", tr, limit=MAX_TR)
    check_time("TE", te, allow_zero=True, limit=MAX_TE)
    check_shorter("TE", te, "TR", tr)
    check_positive("te_correction", te_correction)


def check_flair(tr: Any, te: Any, ti: Any, te_correction: Any = 1.0) -> None:
    """FLAIR: spin-echo rules plus 0 < TI <= 10 s, TI < TR."""
    check_spin_echo(tr, te, te_correction)
    check_time("TI", ti, limit=MAX_TI)
    check_shorter("TI", ti, "TR", tr)


def _check_gre(tr: Any, te: Any, flip_angle_deg: Any, tr_limit: float, what: str) -> None:
    check_time("TR", tr, limit=tr_limit, what=what)
    check_time("TE", te, allow_zero=True, limit=MAX_TE)
    check_shorter("TE", te, "TR", tr)
    check_flip_angle("flip_angle_deg", flip_angle_deg, minimum=MIN_GRE_FLIP_ANGLE)


def check_spoiled_gre(tr: Any, te: Any, flip_angle_deg: Any) -> None:
    """Spoiled GRE: 0 < TR <= 1 s, 0 <= TE <= 1 s, TE < TR, flip angle in [1, 180] degrees."""
    _check_gre(tr, te, flip_angle_deg, MAX_GRE_TR, "a spoiled gradient echo")


def check_inversion_prepared_gre(tr: Any, te: Any, ti: Any, flip_angle_deg: Any) -> None:
    """Inversion-prepared GRE: 0 < TR <= 30 s between inversions, TE as for GRE, 0 < TI <= 10 s,
    TI < TR, readout flip angle in [1, 180] degrees."""
    _check_gre(tr, te, flip_angle_deg, MAX_TR, "")
    check_time("TI", ti, limit=MAX_TI)
    check_shorter("TI", ti, "TR", tr)


def check_mprage(tr: Any, te: Any, ti: Any, flip_angle_deg: Any, tr_excitation: Any = None,
                 n_readouts: Any = None) -> None:
    """MP-RAGE: the inversion-prepared GRE rules, and with the echo train (``tr_excitation`` τ [s],
    ``n_readouts`` N) 0 < τ <= 0.1 s, TE < τ, N a whole number in [1, 4096], the first readout
    after the inversion and the last before the next (TI, TR measured as in :mod:`simulation.mprage`)."""
    check_inversion_prepared_gre(tr, te, ti, flip_angle_deg)
    if tr_excitation is None and n_readouts is None:
        return
    if tr_excitation is None or n_readouts is None:
        raise ValueError("MP-RAGE needs both tr_excitation (readout spacing, s) and n_readouts (readouts per inversion)")
    check_time("tr_excitation", tr_excitation, limit=MAX_ECHO_SPACING, what="an MP-RAGE readout spacing")
    check_shorter("TE", te, "tr_excitation", tr_excitation)
    n = _values("n_readouts", n_readouts)
    if ((n < 1) | (n > MAX_READOUTS) | (n != n.round())).any():
        raise ValueError(f"n_readouts must be a whole number in [1, {MAX_READOUTS}]; got {_show(n)}")
    tau, t_i, t_r = _values("tr_excitation", tr_excitation), _values("TI", ti), _values("TR", tr)
    before = torch.div(n, 2, rounding_mode="floor") * tau
    if (before >= t_i).any():
        raise ValueError(f"TI must exceed the readouts before the centre, (N // 2) * tr_excitation = {_show(before)} s; "
                         f"got TI = {_show(t_i)} s")
    end = t_i + (n - 1 - torch.div(n, 2, rounding_mode="floor")) * tau
    if (end > t_r).any():
        raise ValueError(f"the echo train must end before the next inversion: TI + (N - 1 - N // 2) * tr_excitation = "
                         f"{_show(end)} s > TR = {_show(t_r)} s")


_CHECKS = {
    "sr": check_saturation_recovery,
    "saturation_recovery": check_saturation_recovery,
    "ir": check_inversion_recovery,
    "inversion_recovery": check_inversion_recovery,
    "se": check_spin_echo,
    "tse": check_spin_echo,
    "spin_echo": check_spin_echo,
    "flair": check_flair,
    "gre": check_spoiled_gre,
    "spoiled_gre": check_spoiled_gre,
    "mprage": check_mprage,
    "inversion_prepared_gre": check_inversion_prepared_gre,
}


def check_sequence(kind: str, **params: Any) -> None:
    """Check the parameters of a sequence named ``kind`` (case-insensitive).

    ``kind`` is one of ``sr, ir, se, tse, flair, gre, mprage`` (or the long names
    ``saturation_recovery, inversion_recovery, spin_echo, spoiled_gre, inversion_prepared_gre``);
    ``params`` are the keyword arguments of the matching ``check_*`` function, e.g.
    ``check_sequence("flair", tr=9.0, te=0.09, ti=2.5)``.
    """
    key = kind.lower().replace("-", "_") if isinstance(kind, str) else kind
    if key not in _CHECKS:
        raise ValueError(f"unknown sequence kind {kind!r}; expected one of {sorted(_CHECKS)}")
    try:
        _CHECKS[key](**params)
    except TypeError as err:
        if "argument" in str(err):
            raise TypeError(f"bad parameters for sequence {kind!r}: {err}") from None
        raise

