"""``pinqi train --config FILE``: a JSON file of overrides of a preset, checked key by key.

The file holds a JSON object whose keys are :class:`pinqi.config.TrainConfig` fields, with the
model's under ``"model"`` (:class:`pinqi.config.PINQIConfig`), e.g.
``{"steps": 100, "batch_size": 2, "model": {"n_iterations": 3}}``. Every error names the file,
the key (``model.n_iterations``) and what is allowed: the known keys for an unknown one, the
expected type for a wrong one (a number where the preset has a number, a list where it has a
list, true/false, a string), and the allowed values or range that the configuration's own checks
state (``TrainConfig.batch_size must be an integer >= 1``, ``fit_mode must be one of ...``).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from ..config import PRESETS, TrainConfig, load_train_config

__all__ = ["COUNTS", "read_train_config", "check_w2q_config_file", "check_overrides"]

COUNTS = {  # smallest allowed value of the counts both trainers have
    "batch_size": 1, "checkpoint_every": 1, "image_size": 1, "n_coils": 1, "val_samples": 1,
    "validation_samples": 1, "steps": 0, "pretrain_steps": 0, "warmup_steps": 0, "full_warmup_steps": 0,
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _fits(default: Any, value: Any, optional: bool) -> bool:
    if value is None or default is None:
        return (value is None and optional) or (default is None and isinstance(value, (int, float))
                                                and not isinstance(value, bool))
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return isinstance(value, int) or not isinstance(default, int)
    if isinstance(default, (list, tuple)):
        return isinstance(value, list)
    return isinstance(value, type(default))


def _optional_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if "None" in str(f.type) or "Optional" in str(f.type)}


def check_overrides(
    cls: type, defaults: dict[str, Any], overrides: Any, where: str, prefix: str = ""
) -> None:
    """Refuse an ``overrides`` object with unknown keys or values of the wrong JSON type.

    Parameters
    ----------
    cls
        The configuration dataclass (its annotations say which fields may be null).
    defaults
        The preset as :meth:`~pinqi.common.config_mixin.ConfigMixin.to_dict` gives it.
    overrides
        The parsed JSON (must be an object).
    where
        The file, quoted in the messages.
    prefix
        Dotted path of nested objects (``"model."``).
    """
    if not isinstance(overrides, dict):
        raise ValueError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a JSON object; got {_kind(overrides)}")
    optional = _optional_fields(cls)
    hints = typing.get_type_hints(cls)
    for key, value in overrides.items():
        if key not in defaults:
            raise ValueError(f"{where}: unknown key {prefix + key!r}; allowed keys: {', '.join(sorted(defaults))}")
        default = defaults[key]
        if isinstance(default, dict):
            check_overrides(hints[key], default, value, where, f"{prefix}{key}.")
        elif not _fits(default, value, key in optional):
            raise ValueError(f"{where}: {prefix + key} must be {_kind(default)} (the preset has {default!r}); "
                             f"got {json.dumps(value)}")
        elif key in COUNTS and isinstance(value, int) and value < COUNTS[key]:
            raise ValueError(f"{where}: {prefix + key} must be an integer >= {COUNTS[key]}; got {value}")


def read_train_config(preset: str, path: str | Path | None) -> TrainConfig:
    """The PINQI training configuration: ``preset`` updated by the JSON file ``path`` (if any).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        An unknown preset (naming the presets), a file that is not a JSON object, an unknown key,
        a value of the wrong type or outside what the configuration allows (naming file and key).
    """
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not a PINQI preset; allowed: {', '.join(sorted(PRESETS))}")
    if path is None:
        return load_train_config(preset)
    path = Path(path)
    check_overrides(TrainConfig, load_train_config(preset).to_dict(), _read_json(path), f"--config {path}")
    try:
        return load_train_config(preset, path)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--config {path}: {error}") from None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist or is not a file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--config {path} is not valid JSON ({error})") from None


def check_w2q_config_file(preset: str, path: str | Path | None) -> None:
    """Check a W2Q ``--config`` file against the W2Q preset as :func:`read_train_config` does
    (JSON object, known keys, JSON types, counts >= 1); the W2Q trainer reads it afterwards."""
    from ..w2q.config import PRESETS as W2Q_PRESETS
    from ..w2q.config import W2QTrainConfig

    if preset not in W2Q_PRESETS:
        raise ValueError(f"--preset {preset!r} is not a W2Q preset; allowed: {', '.join(sorted(W2Q_PRESETS))}")
    if path is not None:
        path = Path(path)
        check_overrides(W2QTrainConfig, W2Q_PRESETS[preset]().to_dict(), _read_json(path), f"--config {path}")
