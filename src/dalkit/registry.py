"""A small name -> object registry with helpful errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from dalkit.checks import short, type_error
from dalkit.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factories).

    Args:
        kind: what the registry holds, used in error messages ("strategy", "dataset", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; names are unique."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the valid names.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name" such as a list from YAML
            valid = ", ".join(sorted(self._items))
            message = f"unknown {self.kind} {short(name)}; valid {self.kind} names: {valid}"
            raise UnknownNameError(message) from None

    def create(self, name: str, **options: Any) -> Any:
        """Instantiate the dataclass registered under ``name`` with ``options`` (its fields).

        Raises:
            UnknownNameError: unknown name.
            ConfigError: an option that is not a field, or a value of the wrong type.
        """
        cls = self.get(name)
        valid = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"{self.kind} {name!r} has no option {short(unknown[0])}; its options are: "
                              f"{', '.join(sorted(valid)) or '(none)'}")
        message = type_error(cls, options, f"{self.kind} {name!r} option ") if valid else None
        if message:
            raise ConfigError(message)
        try:
            return cls(**options)
        except TypeError as exc:  # e.g. a string where a number is compared in __post_init__
            raise ConfigError(f"{self.kind} {name!r}: bad option value ({short(str(exc))[1:-1]})") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
