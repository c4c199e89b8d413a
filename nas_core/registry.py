"""A tiny name -> object registry used for blocks, datasets, fidelities, samplers, objectives and proxies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nas_core.errors import RegistryError

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """Maps names to entries; a duplicate name is an error and an unknown one lists the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def register_instance(self, name: str) -> Callable[[C], C]:
        """Class decorator: register one instance of the class, its ``name`` attribute set to ``name`` (exporters, readers)."""

        def decorator(cls: C) -> C:
            obj = cls()
            obj.name = name
            self.add(name, obj)
            return cls

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered; pick another name.")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise RegistryError(f"unknown {self.kind} {name!r}; valid names are: {valid}.") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
