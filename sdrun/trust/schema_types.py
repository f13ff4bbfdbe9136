"""Whether a stored config holds values of its schema's types (a checkpoint's `config`).

The schema is a command's structured config (a dataclass: `Config`, `TransferConfig`). The
check is strict where OmegaConf converts: an int is not a bool and not the string "4", a float
takes an int but not a bool. Keys the schema does not know are passed over: they come from an
older or newer sdrun, and nothing reads them. Types the check does not model (`Any`, unions of
several types) take any plain value.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Optional


def config_problem(schema: Any, saved: Any, prefix: str = "") -> Optional[str]:
    """The first value of `saved` (a nested dict) that is not of `schema`'s type, in words
    naming its dotted key, or None."""
    hint = _without_optional(schema)
    if dataclasses.is_dataclass(hint):
        if not isinstance(saved, Mapping):
            return f"{prefix.rstrip('.') or 'config'} is {_a(type(saved).__name__)}, not a section"
        hints = typing.get_type_hints(hint)
        for key, value in saved.items():
            if key in hints:
                problem = config_problem(hints[key], value, f"{prefix}{key}.")
                if problem:
                    return problem
        return None
    if not _fits(schema, saved):
        key = prefix.rstrip(".")
        return f"{key}={_shown(saved)} is {_a(type(saved).__name__)}, not {_name(schema)}"
    return None


def _fits(hint: Any, value: Any) -> bool:
    """Whether `value` is of the type `hint` (scalars, lists, dicts, optional ones)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(_fits(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_fits(item, v) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, Mapping)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, Mapping)  # checked field by field by `config_problem`
    return True  # a type this check does not model


def _without_optional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return args[0]
    return hint


def _name(hint: Any) -> str:
    """`int`, `an optional int`, `a list[float]` ..."""
    inner = _without_optional(hint)
    text = getattr(inner, "__name__", None) if typing.get_origin(inner) is None else None
    text = text or str(inner).replace("typing.", "")
    return f"an optional {text}" if inner is not hint else _a(text)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
