"""Arch: one architecture of a search space, as an immutable, hashable value.

An ``Arch`` names its space and holds the space's choices as named, frozen values (ints, floats,
strings and nested tuples of them). It has a JSON form (``{"space": ..., <choice>: ...}``) and,
through its space, a fixed-length integer encoding for vectorised search
(``space.encode`` / ``space.decode``). Two Archs are equal exactly when they describe the same
network in the same space: spaces canonicalise choices that do not affect the network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Frozen = int | float | str | bool | tuple["Frozen", ...]


class ArchError(ValueError):
    """An architecture (or its JSON) does not fit its space; the message names the field."""


def freeze(value: Any, field: str = "value") -> Frozen:
    """Return ``value`` with lists turned into tuples, recursively; rejects unhashable kinds."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return tuple(freeze(v, field) for v in value)
    raise ArchError(f"field {field!r}: values must be numbers, strings or lists of them, got {type(value).__name__}")


def thaw(value: Frozen) -> Any:
    """Return ``value`` with tuples turned into lists (its JSON form)."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Arch:
    """An architecture: ``space`` name plus sorted ``(choice name, frozen value)`` pairs."""

    space: str
    choices: tuple[tuple[str, Frozen], ...]

    @classmethod
    def create(cls, space: str, **choices: Any) -> Arch:
        """Build an Arch from keyword choices (lists are frozen; order of keywords is irrelevant)."""
        return cls(space, tuple(sorted((k, freeze(v, k)) for k, v in choices.items())))

    def __getitem__(self, name: str) -> Any:
        for key, value in self.choices:
            if key == name:
                return value
        raise KeyError(f"{self.space} arch has no choice {name!r}; it has {', '.join(self.names)}")

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the choices, sorted."""
        return tuple(k for k, _ in self.choices)

    def as_dict(self) -> dict[str, Frozen]:
        """The choices as a plain dict (values stay frozen)."""
        return dict(self.choices)

    def replace(self, **changes: Any) -> Arch:
        """A copy with some choices changed."""
        merged = {**self.as_dict(), **changes}
        return Arch.create(self.space, **merged)

    def to_json(self) -> dict[str, Any]:
        """JSON object: ``{"space": name, <choice>: value, ...}``."""
        return {"space": self.space, **{k: thaw(v) for k, v in self.choices}}

    def dumps(self) -> str:
        """Compact, canonical JSON text (sorted keys), usable as a cache key."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Arch:
        """Parse the JSON object form (the space validates the values, not this)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("space"), str):
            raise ArchError("field 'space': an arch JSON object needs a 'space' name")
        return cls.create(data["space"], **{k: v for k, v in data.items() if k != "space"})

    def __str__(self) -> str:
        return self.dumps()
