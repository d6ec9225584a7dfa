"""Checks the ``pinqi`` command makes before any work, and its one-line error messages: argparse
types for positive numbers, the output folder check, and :func:`describe` of an exception."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

__all__ = ["positive_int", "non_negative_int", "positive_float", "acceleration", "check_out", "describe"]


def _number(kind: type, low: float, text: str, inclusive: bool = True) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}; got {text!r}") from None
    if not (value >= low if inclusive else value > low) or value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low:g}; got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return int(_number(int, 1, text))


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return int(_number(int, 0, text))


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, 0.0, text, inclusive=False)


def acceleration(text: str) -> float:
    """argparse type: an acceleration factor >= 1."""
    return _number(float, 1.0, text)


def check_out(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove it writable (a file is created in it and removed);
    ValueError naming ``--out`` otherwise."""
    from ..io.outputs import check_output_folder

    path = check_output_folder(folder)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"--out {path} is not writable: {error.strerror or error}") from None
    return path


def describe(error: BaseException) -> str:
    """One line for ``error``: the message (OSError: reason and file), the type where unexpected."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if not isinstance(error, (ValueError, TypeError, OSError, KeyError)) or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return " ".join(text.split())
