"""One ``to_dict`` / ``from_dict`` / ``replace`` for every frozen configuration dataclass.

Configurations are stored in checkpoints as JSON strings (so that the files load with
``torch.load(weights_only=True)``): tuples become lists, nested configurations become nested
dicts, and :meth:`ConfigMixin.from_dict` undoes both and refuses unknown keys.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

__all__ = ["ConfigMixin"]

C = TypeVar("C", bound="ConfigMixin")


class ConfigMixin:
    """Mixin of a frozen dataclass whose fields are numbers, strings, tuples or nested configs."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: tuples become lists, nested configurations dicts."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ConfigMixin):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            values[f.name] = value
        return values

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; unknown keys are a ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; expected a subset of {sorted(known)}")
        hints = typing.get_type_hints(cls)
        converted: dict[str, Any] = {}
        for name, value in values.items():
            nested = hints.get(name)
            if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, ConfigMixin):
                value = nested.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            converted[name] = value
        return cls(**converted)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
