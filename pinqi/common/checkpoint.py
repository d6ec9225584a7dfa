"""Atomic checkpoint files that load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` through an exclusive temporary file in the same folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then rename).

    ``payload`` may hold tensors, state dicts, numbers and strings; put configurations in as JSON
    strings so the file stays loadable with ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path
        The file.
    kind
        When given, the checkpoint's ``kind`` entry (e.g. "pinqi", "w2q") must match.

    Raises
    ------
    ValueError
        If the file is not a checkpoint of this project or of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in reason or "Weights only" in reason:  # torch's advice to unpickle would be unsafe
            reason = f"{type(error).__name__} from torch.load(weights_only=True)"
        raise ValueError(f"{path} is not a readable checkpoint (corrupt, truncated or a foreign file: {reason})") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a checkpoint of this project (format_version {FORMAT_VERSION})")
    if kind is not None and payload.get("kind") != kind:
        raise ValueError(f"{path} is a {payload.get('kind')!r} checkpoint; expected a {kind!r} checkpoint")
    return payload


def config_json(config: Any) -> str:
    """A configuration object's ``to_dict()`` as a JSON string."""
    return json.dumps(config.to_dict(), sort_keys=True)
