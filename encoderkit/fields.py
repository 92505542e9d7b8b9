"""Typed config dataclasses from plain data, and the rules on their fields: one set of rules for every config.

A field's metadata says what values it takes: `value_range` (bounds, and relations to other fields such as
"a multiple of num_attention_heads") and `one_of` (a closed set of names). `build` makes a dataclass from a
mapping (a recipe section, a model's config.json), checking keys, types and those rules; `check` checks the
rules on a built object (the model configs run it on every construction). Both raise `FieldError`, naming the
key. The configs that carry rules live on several floors (train/config.py, objectives, models, recipes);
this module sits below all of them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from encoderkit.errors import UserError


class FieldError(UserError):
    """A value a config field does not take: `key` (dotted, e.g. model.hidden_size) and what is wrong."""

    def __init__(self, key: str, problem: str, related: str | None = None):
        """`related`: the other field a relation names, put where `problem` says {related}."""
        super().__init__(f"{key}: {problem.format(related=related) if related else problem}")
        self.key, self.problem, self.related = key, problem, related

    def under(self, prefix: str) -> FieldError:
        """The same error for a config that sits under `prefix` (e.g. "model.")."""
        return FieldError(prefix + self.key, self.problem, self.related and prefix + self.related)


def value_range(lo=None, hi=None, lo_open: bool = False, hi_open: bool = False, multiple_of: str | None = None,
                below: str | None = None, at_most: str | None = None) -> dict:
    """Field metadata: the value must be >= lo (> lo with lo_open) and <= hi (< hi with hi_open), None leaving
    that side open, and finite; a multiple of the field named `multiple_of`; less than the field named `below`;
    at most the field named `at_most`."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "multiple_of": multiple_of, "below": below,
            "at_most": at_most}


def one_of(choices) -> dict:
    """Field metadata: the value must be one of `choices` (names; None passes where the type allows it)."""
    return {"choices": tuple(choices)}


# ---- rules ------------------------------------------------------------------------------------------


def check(obj, prefix: str = "") -> None:
    """Check every field of dataclass `obj` against its metadata: ranges and names first, then relations between
    fields (so a relation never divides by a value that is itself out of range)."""
    fields = dataclasses.fields(obj)
    for f in fields:
        _check_value(f.metadata, getattr(obj, f.name), prefix + f.name)
    for f in fields:
        value = getattr(obj, f.name)
        for relation, (holds, must) in _RELATIONS.items():
            other_name = f.metadata.get(relation)
            other = getattr(obj, other_name, None) if other_name else None
            if value is not None and other is not None and not holds(value, other):
                raise FieldError(prefix + f.name, f"{value} {must} {{related}}={other}", prefix + other_name)


# relation -> (test of (value, other field's value), what the message says when it fails)
_RELATIONS = {
    "multiple_of": (lambda value, other: value % other == 0, "is not divisible by"),
    "below": (lambda value, other: value < other, "is out of range: it must be less than"),
    "at_most": (lambda value, other: value <= other, "is out of range: it must be at most"),
}


def _check_value(metadata, value, key: str) -> None:
    choices = metadata.get("choices")
    if choices is not None and value is not None and value not in choices:
        raise FieldError(key, f"{value!r} is not one of: {', '.join(map(str, choices))}")
    lo, hi = metadata.get("lo"), metadata.get("hi")
    if value is None or (lo is None and hi is None):
        return
    if not math.isfinite(value):
        raise FieldError(key, f"{value} is not a finite number")
    too_low = lo is not None and (value < lo or (metadata.get("lo_open") and value == lo))
    too_high = hi is not None and (value > hi or (metadata.get("hi_open") and value == hi))
    if too_low or too_high:
        raise FieldError(key, f"{value} is out of range (must be {_describe(metadata)})")


def _describe(metadata) -> str:
    lo, hi, lo_open, hi_open = (metadata.get(k) for k in ("lo", "hi", "lo_open", "hi_open"))
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


# ---- building from plain data ------------------------------------------------------------------------


def build(cls, raw: Any, prefix: str = ""):
    """Dataclass `cls` from a mapping: unknown keys, missing required keys, types and the fields' rules are
    checked; keys are named with `prefix` (e.g. "model.")."""
    section = prefix.rstrip(".") or "recipe"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise FieldError(section, f"expected a mapping of keys, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise FieldError(f"{prefix}{unknown[0]}", f"unknown key; valid keys are: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if dataclasses.is_dataclass(hints[name]):
                    values[name] = build(hints[name], {}, key + ".")
                    continue
                raise FieldError(key, "missing (required)")
            continue
        values[name] = coerce(hints[name], raw[name], key)
    try:
        obj = cls(**values)
    except FieldError as err:  # a config that checks itself as it is built (the model configs)
        raise err.under(prefix) from None
    check(obj, prefix)
    return obj


def coerce(tp, value, key: str):
    """`value` as type `tp` (a dataclass is built, an int is taken for a float); FieldError if it is not one."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(option, value, key)
            except FieldError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise FieldError(key, f"{value!r} is not one of: {', '.join(map(str, choices))}")
        return value
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise FieldError(key, f"expected a mapping, got {value!r}")
        return {coerce(key_tp, k, key): coerce(value_tp, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise FieldError(key, f"expected a list, got {value!r}")
        return [coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise FieldError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise FieldError(key, f"expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise FieldError(key, f"expected a string, got {value!r}")
        return value
    raise FieldError(key, f"unsupported type {tp}")

