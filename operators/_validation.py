"""Small shape/dtype checks shared by the operators.

Every check raises a ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape or value)
whose message names what was expected and what came. The shape/dtype checks only look at
metadata and run on every operator application. The value checks (:func:`require_finite`,
:func:`require_nonzero`) cost one reduction: operators run them on the tensors they are built
from (coil maps, masks) and on the inputs of ``forward``/``adjoint``, not inside ``gram`` (the
solvers' inner loop, whose right-hand side :func:`solvers.cg` checks itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def shape_str(shape: Sequence[int]) -> str:
    """Format a shape as ``(2, 4, 8, 8)`` (``()`` for a scalar, ``(3,)`` for one dim)."""
    dims = tuple(int(s) for s in shape)
    return str(dims)


def require_tensor(name: str, t: object) -> torch.Tensor:
    """Return ``t`` if it is a ``torch.Tensor``; raise ``TypeError`` otherwise."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    return t


def require_complex(name: str, t: object) -> torch.Tensor:
    """Require a complex tensor (``complex64``/``complex128``); raise ``TypeError`` otherwise."""
    t = require_tensor(name, t)
    if not t.is_complex():
        raise TypeError(f"{name} must be a complex tensor (complex64 or complex128); got dtype {t.dtype}")
    return t


def require_real(name: str, t: object) -> torch.Tensor:
    """Require a bool or real floating tensor (e.g. a sampling mask); raise ``TypeError`` otherwise."""
    t = require_tensor(name, t)
    if t.is_complex() or not (t.dtype == torch.bool or t.is_floating_point()):
        raise TypeError(f"{name} must be a bool or real floating tensor; got dtype {t.dtype}")
    return t


def require_dtype(name: str, t: torch.Tensor, dtype: torch.dtype, reason: str) -> None:
    """Require ``t.dtype == dtype``; ``reason`` says where the expected dtype comes from."""
    if t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} ({reason}); got {t.dtype}")


def require_min_ndim(name: str, t: torch.Tensor, ndim: int, layout: str) -> None:
    """Require at least ``ndim`` dimensions; ``layout`` (e.g. ``"(*b, T, Y, X)"``) is quoted."""
    if t.ndim < ndim:
        raise ValueError(
            f"{name} must have shape {layout} (at least {ndim} dims); got {shape_str(t.shape)}"
        )


def require_trailing(name: str, t: torch.Tensor, expected: Sequence[int | None], layout: str,
                     reason: str) -> None:
    """Require the trailing dims of ``t`` to equal ``expected`` (``None`` = any size).

    Parameters
    ----------
    name, layout
        Name and layout (e.g. ``"(*b, C, Y, X)"``) quoted in the message.
    expected
        Sizes of the last ``len(expected)`` dims of ``t``.
    reason
        Where the expected sizes come from, e.g. ``"Y, X = (8, 8) of the coil maps"``.
    """
    got = tuple(t.shape[t.ndim - len(expected):]) if t.ndim >= len(expected) else None
    ok = got is not None and all(e is None or e == g for e, g in zip(expected, got))
    if not ok:
        raise ValueError(f"{name} must have shape {layout} with {reason}; got {shape_str(t.shape)}")


def require_batch_broadcast(name: str, batch: Sequence[int], target_name: str,
                            target: Sequence[int]) -> None:
    """Require the batch shape ``batch`` to broadcast *to* ``target`` without enlarging it.

    Used so that a shared operator tensor (e.g. coil maps without batch dims) may serve a batch of
    images, while an image is never silently broadcast against the operator's batch.
    """
    batch, target = tuple(batch), tuple(target)
    try:
        ok = torch.broadcast_shapes(batch, target) == target
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"the batch dims {shape_str(batch)} of {name} must broadcast to the batch dims "
            f"{shape_str(target)} of {target_name}"
        )


def require_finite(name: str, t: torch.Tensor) -> torch.Tensor:
    """Require every value of ``t`` to be finite (no NaN or ±inf); raise ``ValueError`` otherwise.

    One sum decides in the common case (a finite sum means finite values); only a non-finite sum
    (NaN/inf, or an overflow of huge finite values) pays for the element-wise test.
    """
    with torch.no_grad():
        values = t.detach()
        if values.numel() == 0 or values.dtype == torch.bool or not (values.is_floating_point() or values.is_complex()):
            return t
        if bool(torch.isfinite(values.sum())):
            return t
        bad = ~torch.isfinite(values)
        count = int(bad.sum())
        if count:
            raise ValueError(f"{name} must be finite; it has {count} NaN or inf value(s) of {values.numel()}")
    return t


def require_nonzero(name: str, t: torch.Tensor, sample_dims: int, what: str) -> torch.Tensor:
    """Refuse ``t`` where all of its last ``sample_dims`` dims are zero for some leading index.

    Parameters
    ----------
    name
        The argument's name quoted in the message (e.g. ``"csm"``).
    t
        The tensor; ``t.shape[:-sample_dims]`` indexes its samples (e.g. batch and time).
    sample_dims
        How many trailing dims form one sample (e.g. 3 for coil maps ``(C, Y, X)``).
    what
        What an all-zero sample means, e.g. ``"coil maps with no sensitivity"``.
    """
    with torch.no_grad():
        if t.numel() == 0:
            raise ValueError(f"{name} is empty (shape {shape_str(t.shape)}); {what}")
        flat = t.detach().reshape(*t.shape[: t.ndim - sample_dims], -1) if t.ndim > sample_dims \
            else t.detach().reshape(1, -1)
        empty = ~(flat != 0).any(dim=-1)
        if bool(empty.any()):
            where = [tuple(i) if len(i) > 1 else int(i[0]) for i in empty.nonzero().tolist()][:8] if t.ndim > sample_dims else []
            at = f" at index {where}" if where else ""
            raise ValueError(f"{name} is all zero{at}: {what}")
    return t
