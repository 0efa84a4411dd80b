"""One small generic registry used for readers, tissue methods, encoders and heads."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factories); ``register`` is a decorator.

    ``declared`` names entries before they are registered: name -> the module whose import registers it.
    Their names are known at once (help texts, checks of a spec) and the module, which may import torch,
    is imported when the entry is first asked for."""

    def __init__(self, kind: str, declared: dict[str, str] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._declared = dict(declared or {})

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items and name in self._declared:
            importlib.import_module(self._declared[name])
            if name not in self._items:
                raise RuntimeError(
                    f"{self._declared[name]} does not register the {self.kind} {name!r} it is declared for"
                )
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}", fix=f"choose one of: {known}") from None

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._declared))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
