"""One place for the checks every configuration object shares: field types and short value reprs.

Every frozen dataclass whose fields are user options (``TrainConfig``, ``ExperimentConfig``, every
registered strategy and recipe) is checked by :func:`check_field_types` against its annotations, so a
string, a float or a boolean where an integer is expected, or a non-finite float, is refused with a
message naming the field, whatever class it belongs to.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import reprlib
import types
import typing
from typing import Any

import yaml

from dalkit.errors import ConfigError

MAX_VALUE_CHARS = 80

_repr = reprlib.Repr()
_repr.maxstring = MAX_VALUE_CHARS
_repr.maxother = MAX_VALUE_CHARS
_repr.maxlevel = 3
for _attr in ("maxlist", "maxtuple", "maxdict", "maxset"):
    setattr(_repr, _attr, 6)


def short(value: Any) -> str:
    """``repr(value)`` bounded in size and time (deep or huge structures are elided with ...)."""
    text = _repr.repr(value)
    return text if len(text) <= 2 * MAX_VALUE_CHARS else text[: 2 * MAX_VALUE_CHARS] + "..."


def count_values(value: Any, limit: int) -> int:
    """Number of scalars and containers in a parsed YAML/JSON value, counting shared (aliased)
    sub-structures each time they occur; stops counting at ``limit`` (returns ``limit``)."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count >= limit:
            return limit
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
    return count


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check against
        return {}


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if tp is float:
        return "a finite number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool | None:
    """True/False when ``tp`` is a type we check, None when it is not (anything goes)."""
    if tp is Any:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, arg) for arg in typing.get_args(tp)]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return None


def type_error(cls: type, values: dict[str, Any], where: str) -> str | None:
    """The first field of ``values`` whose value does not match ``cls``'s annotation, as a message."""
    hints = _hints(cls)
    for name, value in values.items():
        tp = hints.get(name)
        if tp is None or _matches(value, tp) is not False:
            continue
        args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        expected = " or ".join(_describe(a) for a in args)
        return f"{where}{name} must be {expected}, got {short(value)}"
    return None


def check_field_types(obj: Any, where: str = "") -> None:
    """Raise ConfigError when a field of the dataclass instance ``obj`` does not match its annotation.

    Args:
        where: prefix of the field name in the message (``"train."``, ``"dm2 option "``).
    Raises:
        ConfigError: names the field, the expected type and the (shortened) value.
    """
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    message = type_error(type(obj), values, where)
    if message:
        raise ConfigError(message)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a number.

    YAML 1.1 (PyYAML's schema) only reads a float with a dot and a signed exponent (``1.0e-3``), so
    ``1e-3``, ``1e3`` and ``1.5e3`` would stay strings and be refused as "not a number"; YAML 1.2 and
    every user read them as numbers.
    """


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_load(text: str | bytes) -> Any:
    """``yaml.safe_load`` that also reads scientific notation without a dot (``1e-3``) as a float.

    Raises:
        yaml.YAMLError: not YAML.
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
