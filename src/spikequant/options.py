"""Options dataclasses, checked when they are made.

The recipe's sections, each training method's ``method:`` section and each conversion method's
options are all frozen dataclasses that derive from :class:`Options`, with fields declared as
``name: type = option(default, low=..., high=..., above=..., below=..., choices=...)``.
Making one checks every field against its annotation and its bounds:

* annotations: ``int``, ``float`` (an int is accepted), ``bool``, ``str``, ``list[...]``,
  ``dict[str, ...]``, a nested :class:`Options` class, and unions such as ``X | None``;
* bounds: ``low <= v <= high`` and ``above < v < below``;
* ``choices``: the allowed values;
* ``check``: a function of the value that returns what is wrong with it, or None.

Bounds, choices and ``check`` apply to each item of a list.

A bad value raises :class:`OptionError` naming the field. :func:`build` makes an options object
from a mapping. An unknown key is an error naming the closest valid key, a missing required key is
named, and nested sections (also in lists, in mappings and in unions) are built from their
mappings. Every error carries the full key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import types
import typing
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

# bound name -> (the word in the message, the test a value must pass)
BOUNDS = {
    "low": (">=", operator.ge),
    "above": (">", operator.gt),
    "high": ("<=", operator.le),
    "below": ("<", operator.lt),
}


class OptionError(ConfigError):
    """A value that breaks its field's declaration; ``path`` names the field (dotted)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem


def option(
    default: Any = dataclasses.MISSING,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: tuple | None = None,
    check: Callable[[Any], str | None] | None = None,
    factory: Any = None,
    help: str | None = None,
    flag: str | None = None,
) -> Any:
    """A dataclass field with bounds, allowed values, a check, and the help text and flag a
    command line shows for it. ``factory`` makes a mutable default (a list, a dict, a nested
    section)."""
    given = {"low": low, "high": high, "above": above, "below": below, "check": check}
    given |= {"help": help, "flag": flag}
    meta = {k: v for k, v in given.items() if v is not None}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Options:
    """Base of options dataclasses: ``__post_init__`` checks every field (module docstring).
    A subclass with its own checks calls ``super().__post_init__()`` first."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), hints[f.name], f.metadata)


def check_value(
    path: str, value: Any, hint: Any, meta: typing.Mapping = types.MappingProxyType({})
):
    """Check ``value`` against the annotation ``hint`` and the field's ``option`` metadata."""
    _check_type(path, value, hint)
    choices, check = meta.get("choices"), meta.get("check")
    for item in value if isinstance(value, list) else [value]:
        if choices is not None and item not in choices:
            verb = "hold only" if isinstance(value, list) else "be one of"
            raise OptionError(path, f"must {verb} {', '.join(map(str, choices))}, got {item!r}")
        problem = check(item) if check is not None and item is not None else None
        if problem:
            raise OptionError(path, f"{problem}, got {item!r}")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            for key, (word, passes) in BOUNDS.items():
                if key in meta and not passes(item, meta[key]):
                    raise OptionError(path, f"must be {word} {meta[key]}, got {item!r}")


def _check_type(path: str, value: Any, hint: Any) -> None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        for choice in options:
            try:
                _check_type(path, value, choice)
                return
            except OptionError:
                continue
        if len(options) == 2 and type(None) in options:  # the value's own problem, if any
            _check_type(path, value, next(o for o in options if o is not type(None)))
        raise OptionError(path, f"must be {' or '.join(map(_name, options))}, got {value!r}")
    if hint is type(None):
        ok = value is None
    elif origin in (list, tuple):
        if not isinstance(value, list):
            raise OptionError(path, f"must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        for i, v in enumerate(value):
            _check_type(f"{path}[{i}]", v, item)
        return
    elif origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise OptionError(path, f"must be a mapping, got {value!r}")
        for key, v in value.items() if origin is dict else ():
            _check_type(f"{path}.{key}", v, typing.get_args(hint)[1])
        return
    elif hint is Any:
        return
    elif _is_section(hint):
        ok = isinstance(value, hint)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise OptionError(path, f"must be finite, got {value!r}")
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise OptionError(path, f"must be {_name(hint)}, got {value!r}")


def _name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if hint is float:
        return "int or float"
    return getattr(hint, "__name__", str(hint))


def check_keys(where: str, given: dict, allowed, context: str = "recipe") -> None:
    """An unknown key is ``<context>: unknown key data.bach_size (did you mean
    data.batch_size?)``."""
    for key in given:
        if key in allowed:
            continue
        path = f"{where}.{key}" if where else str(key)
        close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1, cutoff=0.5)
        if close:
            hint = f"did you mean {where + '.' if where else ''}{close[0]}?"
        else:
            hint = f"allowed: {', '.join(sorted(map(str, allowed)))}"
        raise ConfigError(f"{context}: unknown key {path} ({hint})")


def build(cls: type, given: Any, where: str, context: str = "recipe") -> Any:
    """``cls`` made from the mapping ``given`` (module docstring); errors read
    ``<context>: <where>.<key> <problem>``."""
    if not isinstance(given, dict):
        raise ConfigError(f"{context}: {where} must be a mapping, got {given!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(where, given, fields, context)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in given:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{context}: {path} is required")
            continue
        values[name] = _sections(hints[name], given[name], path, context)
    try:
        return cls(**values)
    except OptionError as exc:
        raise ConfigError(f"{context}: {where + '.' if where else ''}{exc}") from None


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Options)


def _sections(hint: Any, value: Any, path: str, context: str) -> Any:
    """``value`` with the sections its annotation declares (a section, a list or mapping of
    them, or a union holding one) built from their mappings; other values as given."""
    if _is_section(hint):
        return build(hint, value, path, context)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and isinstance(value, dict):
        section = next((a for a in args if _is_section(a)), None)
        return value if section is None else build(section, value, path, context)
    if origin is list and isinstance(value, list):
        return [_sections(args[0], v, f"{path}[{i}]", context) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {k: _sections(args[1], v, f"{path}.{k}", context) for k, v in value.items()}
    return value
