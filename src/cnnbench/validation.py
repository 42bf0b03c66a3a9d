"""The one validator of params.yaml: plain YAML data in, a checked frozen dataclass out.

`build` rejects unknown keys (suggesting the nearest valid one), checks each field's type against
the dataclass's annotations, then runs the dataclass's own value checks (`Validated.validate`) and
names the failing field by its full path: `params: runs.x.train.epochs: must be > 0`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from cnnbench.errors import ConfigError


class Invalid(ConfigError):
    """A value check failed; `build` adds the path of the block the field belongs to."""

    def __init__(self, key: str, message: str):
        super().__init__(f"params: {key}: {message}")
        self.key, self.message = key, message


def require(ok: bool, key: str, message: str) -> None:
    """Inside a dataclass's `validate`: raise Invalid for field `key` unless `ok`."""
    if not ok:
        raise Invalid(key, message)


class Validated:
    """Dataclasses check their values on construction, wherever they are built from."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise Invalid(field, message) for a value this block cannot use."""


def build(cls, data: dict, where: str):
    """Instantiate dataclass `cls` from `data`: unknown keys, missing keys, types, then its value checks."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    reject_unknown({k: v for k, v in data.items() if k != "name"}, [f.name for f in fields if f.name != "name"], where)
    kwargs = {}
    for f in fields:
        if f.name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                raise ConfigError(f"params: {where}.{f.name}: is required")
            continue
        kwargs[f.name] = coerce(data[f.name], hints[f.name], f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except Invalid as err:
        raise ConfigError(f"params: {where}.{err.key}: {err.message}") from None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type annotation `hint` (nested dataclasses, tuples, dicts built too)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            check(type(None) in args, where, "must not be null")
            return None
        return coerce(value, next(a for a in args if a is not type(None)), where)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, mapping(value, where), where)
    if origin is tuple:
        check(isinstance(value, (list, tuple)), where, f"must be a list, not {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        check(len(value) == len(args), where, f"must have {len(args)} entries, not {len(value)}")
        return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        return {coerce(k, args[0], where): coerce(v, args[1], f"{where}.{k}")
                for k, v in mapping(value, where).items()}
    if hint is bool:
        check(isinstance(value, bool), where, f"must be true or false, not {value!r}")
    elif hint is int:
        check(isinstance(value, int) and not isinstance(value, bool), where, f"must be an integer, not {value!r}")
    elif hint is float:
        check(isinstance(value, (int, float)) and not isinstance(value, bool), where,
               f"must be a number, not {value!r}")
        return float(value)
    elif hint is str:
        check(isinstance(value, str), where, f"must be a string, not {value!r}")
    return value


def reject_unknown(data: dict, known, where: str) -> None:
    """An unknown key is an error that names the nearest valid key: `trian` is not silently ignored."""
    for key in data:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        path = f"{where}.{key}" if where else str(key)
        raise ConfigError(f"params: {path}: unknown key; {hint}expected one of {', '.join(sorted(known))}")


def check(ok: bool, where: str, message: str) -> None:
    """Raise ConfigError naming `where` unless `ok`."""
    if not ok:
        raise ConfigError(f"params: {where}: {message}")


def mapping(value: Any, where: str) -> dict:
    """`value` when it is a mapping, else a ConfigError naming `where`."""
    check(isinstance(value, dict), where, f"must be a mapping, not {type(value).__name__}")
    return value
