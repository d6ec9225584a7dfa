"""Small shape/dtype checks shared by the operators.

Every check raises a ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape) whose
message names what was expected and what came. The checks only look at metadata (shape, dtype),
never at values, so they are cheap enough to run on every operator application.
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
