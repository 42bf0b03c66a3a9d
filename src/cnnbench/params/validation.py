"""The one validator of params.yaml: plain YAML data in, a checked frozen dataclass out.

`build` rejects unknown keys (suggesting the nearest valid one), checks each field's type against
the dataclass's annotations, then runs the dataclass's own value checks (`Validated.validate`) and
names the failing field by its full path: `params: runs.x.train.epochs: must be > 0`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import reprlib
import types
import typing
from typing import Any

import yaml

from cnnbench.core.errors import ConfigError

# Names of sources, datasets, models, runs and suites become DVC stage names, folder names and
# command-line arguments: letters, digits, '.', '_' and '-', starting with a letter or digit (so
# never '..', never an option such as '-x', never a shell metacharacter).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "a name is 1-100 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
# Suite outputs stay under reports/ (the report overwrites README.md and figures/ in its `dir`), in
# such names: no absolute path, no '..', no shell metacharacter.
REPORTS_ROOT = "reports"
_REPORTS_PATH = re.compile(rf"{REPORTS_ROOT}(/{NAME_PATTERN.pattern})*")

# Error messages quote at most this much of a value: a huge or deeply shared value costs nothing to report.
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 60, 60, 4, 4, 2


def shown(value: Any) -> str:
    """A bounded repr of `value` for an error message."""
    return _short.repr(value)


def check_name(name: Any, where: str) -> str:
    """`name` when it is a safe identifier (NAME_RULE), else a ConfigError naming `where`."""
    if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        raise ConfigError(f"params: {where}: {shown(name)} is not a valid name ({NAME_RULE})")
    return name


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


def is_reports_path(path: str) -> bool:
    """Whether `path` is reports/ or a folder under it, every part a name (NAME_RULE)."""
    return _REPORTS_PATH.fullmatch(path) is not None


def load_yaml(text: str):
    """YAML data from `text`, read with the safe loader; aliases (`*name`) are fine unless the document they
    expand to exceeds MAX_YAML_VALUES (yaml.YAMLError then, before anything walks it)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_values(node, {})
        if values > MAX_YAML_VALUES:
            raise yaml.YAMLError(f"its aliases expand it to {values:,} values, more than the limit of "
                                 f"{MAX_YAML_VALUES:,} (a \"billion laughs\")")
        return loader.construct_document(node)
    finally:
        loader.dispose()


# params.yaml holds about 2,000 values; a document that expands to 1,000 times that is not a params file.
MAX_YAML_VALUES = 2_000_000


def _expanded_values(node, memo: dict) -> int:
    """How many values `node` stands for once every alias is expanded (each shared node counted once per use)."""
    if id(node) not in memo:
        if isinstance(node, yaml.MappingNode):
            memo[id(node)] = 1 + sum(_expanded_values(k, memo) + _expanded_values(v, memo) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            memo[id(node)] = 1 + sum(_expanded_values(v, memo) for v in node.value)
        else:
            memo[id(node)] = 1
    return memo[id(node)]


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
        if not isinstance(value, (list, tuple)):
            fail(where, f"must be a list, not {shown(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        check(len(value) == len(args), where, f"must have {len(args)} entries, not {len(value)}")
        return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        return {coerce(k, args[0], where): coerce(v, args[1], f"{where}.{k}")
                for k, v in mapping(value, where).items()}
    if hint is bool:
        if not isinstance(value, bool):
            fail(where, f"must be true or false, not {shown(value)}")
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            fail(where, f"must be an integer, not {shown(value)}")
    elif hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            fail(where, f"must be a number, not {shown(value)}")
        return float(value)
    elif hint is str:
        if not isinstance(value, str):
            fail(where, f"must be a string, not {shown(value)}")
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


def fail(where: str, message: str) -> None:
    """Raise ConfigError naming `where` (build the message only when failing: see `shown`)."""
    raise ConfigError(f"params: {where}: {message}")


def mapping(value: Any, where: str) -> dict:
    """`value` when it is a mapping, else a ConfigError naming `where`."""
    check(isinstance(value, dict), where, f"must be a mapping, not {type(value).__name__}")
    return value


def deep_merge(base: dict, override: dict) -> dict:
    """`base` with `override` merged in, recursively for nested mappings (a run's train overrides)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def named_table(raw: dict, section: str, parse, required: bool = True) -> dict:
    """A params section of named blocks (`runs:`, `sources:`...): each name checked (NAME_RULE), each block parsed."""
    value = raw.get(section)
    if value is None and not required:
        return {}
    check(isinstance(value, dict) and (bool(value) or not required), section,
           "must be a non-empty mapping" if required else "must be a mapping")
    return {check_name(str(name), section): parse(str(name), item, f"{section}.{name}")
            for name, item in value.items()}


def cross_check(ok: bool, where: str, value: str, kind: str, known: dict) -> None:
    """A reference to another block (`runs.x.dataset`) that must name one of `known`."""
    check(ok, where, f"unknown {kind} {value!r}; known: {', '.join(known) or '(none declared)'}")


def lookup(table: dict, name: str, kind: str):
    """`table[name]`, or a ConfigError listing the names there are."""
    if name not in table:
        raise ConfigError(f"params: unknown {kind} {name!r}; known: {', '.join(table) or '(none)'}")
    return table[name]
