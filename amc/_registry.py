"""A tiny name -> factory registry: strategies are picked by name, never by ``eval``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factories).

    An unknown name raises ``ValueError`` listing the valid names, so that a typo on the command
    line becomes a one-line error instead of a ``KeyError`` from deep inside.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
        if obj is None:
            return lambda o: self.register(name, o)
        if name.lower() in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name.lower()] = obj
        return obj

    def get(self, name: str) -> T:
        key = str(name).lower()
        if key not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._items[key]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._items
