"""Declared hyperparameters: each field states its constraint once, and ``build`` checks a config against them.

An algorithm's hyperparameters are a dataclass whose fields are declared with ``param``::

    @dataclass
    class MyHparams(LocalSGD):
        beta: float = param(0.5, ge=0, le=1)
        weights: str = param("estimated", choices=("uniform", "beta", "estimated"))
        memory: float | None = param(0.3, gt=0, le=1)      # None is always allowed for an optional field
        grid: list[float] = param(default_factory=lambda: [0.0, 0.5, 1.0], ge=0, le=1, min_items=1)

        def __post_init__(self):                            # cross-field checks only
            super().__post_init__()
            ...

``build(MyHparams, {"beta": 2})`` checks every given value against its field's annotation (resolved with
``typing.get_type_hints``) and ``param`` constraint, then constructs the dataclass (which runs ``__post_init__``).
All problems of one call are reported together in one ``HparamError``; each message names the field and the value.

Types: ``float`` (ints accepted and converted), ``int`` (bools and floats, even 4.0, rejected), ``bool``, ``str``,
``X | None``, ``list[float]`` / ``list[int]`` (bounds apply to every element). A plain field without ``param`` is
type-checked only. Used by ``pcl validate`` and the Snakefile (through ``pcl.config.validate_experiment``) as well as
by the train job, so a bad value stops the workflow before any job runs.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Constraint", "HparamError", "build", "constraint_of", "param"]

_KEY = "pcl.hparam"
_MISSING = dataclasses.MISSING


class HparamError(ValueError):
    """Invalid hyperparameters; ``errors`` holds one message per problem, each naming the field and its value."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Constraint:
    """Bounds (``gt``/``ge``/``lt``/``le``), allowed ``choices`` and, for lists, ``min_items`` of one field."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None
    min_items: int | None = None

    def describe_range(self) -> str:
        lo = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        hi = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f"{'>=' if self.ge is not None else '>'} {lo[1:]}"
        if hi:
            return f"{'<=' if self.le is not None else '<'} {hi[:-1]}"
        return "any number"

    def in_range(self, v: float) -> bool:
        if isinstance(v, float) and math.isnan(v):
            return False
        return ((self.gt is None or v > self.gt) and (self.ge is None or v >= self.ge)
                and (self.lt is None or v < self.lt) and (self.le is None or v <= self.le))

    @property
    def bounded(self) -> bool:
        return any(b is not None for b in (self.gt, self.ge, self.lt, self.le))


def param(default: Any = _MISSING, *, default_factory: Callable[[], Any] | Any = _MISSING,
          gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
          choices: Sequence | None = None, min_items: int | None = None) -> Any:
    """A dataclass field with its constraint: ``lr: float = param(0.05, gt=0)``.

    ``gt``/``ge``/``lt``/``le``: exclusive/inclusive bounds (for a list, on every element); ``choices``: the allowed
    values; ``min_items``: the shortest allowed list. ``None`` passes for fields annotated ``X | None``."""
    if (default is _MISSING) == (default_factory is _MISSING):
        raise TypeError("param: give exactly one of default or default_factory")
    if gt is not None and ge is not None or lt is not None and le is not None:
        raise TypeError("param: give at most one lower (gt/ge) and one upper (lt/le) bound")
    c = Constraint(gt=gt, ge=ge, lt=lt, le=le, choices=tuple(choices) if choices is not None else None,
                   min_items=min_items)
    if default_factory is _MISSING:
        return dataclasses.field(default=default, metadata={_KEY: c})
    return dataclasses.field(default_factory=default_factory, metadata={_KEY: c})


def constraint_of(f: dataclasses.Field) -> Constraint:
    """The constraint ``param`` declared on field ``f`` (none for a plain field)."""
    return f.metadata.get(_KEY) or Constraint()


# ---------------------------------------------------------------------------------------------------- types
def _optional(tp) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(tp, False)`` otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _describe(tp) -> str:
    inner, optional = _optional(tp)
    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner)
        text = "a list of " + {float: "numbers", int: "integers", bool: "booleans", str: "strings"}[item]
    else:
        text = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}[inner]
    return text + " or null" if optional else text


def _supported(tp) -> bool:
    inner, _ = _optional(tp)
    if typing.get_origin(inner) is list:
        args = typing.get_args(inner)
        return len(args) == 1 and args[0] in (float, int, bool, str)
    return inner in (float, int, bool, str)


class _Bad(Exception):
    pass


def _scalar(tp, v):
    """``v`` as type ``tp`` (an int as float), or raise ``_Bad``."""
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad
        return float(v)
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad
        return v
    if not isinstance(v, tp):
        raise _Bad
    return v


def _convert(tp, v):
    inner, optional = _optional(tp)
    if v is None:
        if optional:
            return None
        raise _Bad
    if typing.get_origin(inner) is list:
        if not isinstance(v, (list, tuple)):
            raise _Bad
        (item,) = typing.get_args(inner)
        return [_scalar(item, x) for x in v]
    return _scalar(inner, v)


def _hint(tp, v) -> str:
    """Why a string that looks like a number is a string: YAML 1.1 reads ``1e-3`` (no dot) as text."""
    inner, _ = _optional(tp)
    if isinstance(v, str) and inner in (float, int):
        try:
            float(v)
        except ValueError:
            return ""
        return " (YAML reads numbers like 1e-3 as text; write 1.0e-3)"
    return ""


def _check(name: str, tp, c: Constraint, value) -> tuple[Any, str | None]:
    """The converted value and ``None``, or ``(value, message)``."""
    try:
        v = _convert(tp, value)
    except _Bad:
        return value, f"{name}={value!r}: expected {_describe(tp)}, got {type(value).__name__}{_hint(tp, value)}"
    if v is None:
        return v, None
    items = v if isinstance(v, list) else [v]
    if isinstance(v, list) and c.min_items is not None and len(v) < c.min_items:
        return v, f"{name}={value!r}: must have at least {c.min_items} item{'s' * (c.min_items != 1)}"
    if c.choices is not None:
        bad = [x for x in items if x not in c.choices]
        if bad:
            close = difflib.get_close_matches(str(bad[0]), [str(x) for x in c.choices], n=1)
            did = f" (did you mean {close[0]!r}?)" if close else ""
            return v, f"{name}={value!r}: must be one of {', '.join(map(repr, c.choices))}{did}"
    if c.bounded and not all(c.in_range(x) for x in items):
        what = "every item must be" if isinstance(v, list) else "must be"
        return v, f"{name}={value!r}: {what} {c.describe_range()}" + (" or null" if _optional(tp)[1] else "")
    return v, None


# ---------------------------------------------------------------------------------------------------- build
def build(cls: type, values: dict | None = None) -> Any:
    """``cls(**values)`` after checking every value against its field's type and declared constraint.

    Unknown keys are named with the closest known one and the list of known ones; every problem is collected and
    raised together as one ``HparamError``. Cross-field checks in ``cls.__post_init__`` run once the fields pass."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise HparamError([f"expected a mapping of hyperparameters, got {type(values).__name__} {values!r}"])
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    errors, clean = [], {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            did = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{key}: unknown hyperparameter for {cls.__qualname__}{did}; "
                          f"known: {', '.join(sorted(fields))}")
            continue
        tp = hints[key]
        if not _supported(tp):
            raise TypeError(f"{cls.__qualname__}.{key}: unsupported annotation {tp!r} (hparams.py supports float, "
                            "int, bool, str, X | None, list[float], list[int])")
        clean[key], err = _check(key, tp, constraint_of(fields[key]), value)
        if err:
            errors.append(err)
    if errors:
        raise HparamError(errors)
    try:
        return cls(**clean)
    except HparamError:
        raise
    except (ValueError, TypeError) as err:  # cross-field checks in __post_init__
        raise HparamError([str(err)]) from None
