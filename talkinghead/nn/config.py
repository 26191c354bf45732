"""`ConfigDict`: the dict round trip every network config dataclass shares."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, TypeVar

__all__ = ["ConfigDict"]

C = TypeVar("C", bound="ConfigDict")


class ConfigDict:
    """Mixin for config dataclasses.

    `to_dict`: plain Python for checkpoints and YAML (tuples as lists; nested configs as their own
    `to_dict`). `from_dict`: the inverse; a key the class does not have is a ValueError naming it and
    the valid keys. Nested configs given as dicts are converted by the class's ``__post_init__``.
    """

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, ConfigDict):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[item.name] = value
        return out

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None) -> C:
        values = dict(values or {})
        valid = sorted(f.name for f in fields(cls))
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid: {valid}")
        return cls(**values)
