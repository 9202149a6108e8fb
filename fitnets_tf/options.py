"""Options: a dataclass field that also knows its help text, its limits and its flag.

An option is declared once, in a frozen dataclass (see :mod:`fitnets_tf.config`)::

    temperature: float = option(3.0, "τ of the soft targets.", exclusive_minimum=0)

From that one line come the default, the validation (:func:`problems`), the command-line flag
(:mod:`fitnets_tf.cli.flags` derives every absl flag from these fields) and the line of the
re-runnable flagfile a run writes (:func:`serialize`). No other file lists the options.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from typing import Any

from fitnets_tf.errors import ConfigError

_METADATA_KEY = "fitnets_tf.option"


@dataclasses.dataclass(frozen=True)
class Option:
    """What a field adds to a plain dataclass field.

    Attributes:
        help: the flag's help text.
        flag: the flag's name, where it differs from the field's (``modes`` is ``--mode``).
        choices: the valid values (of each item, for a tuple), or a function returning them
            (registries that are filled at import time, like the architectures).
        minimum, maximum: inclusive bounds of a number. exclusive_minimum: a strict one.
        noun: how a message names one item of a tuple option ("unknown stage 'x'").
        check: for values that no list can hold (a file path, ``folder:PATH``): a function of
            the value returning what is wrong with it, one sentence, or None when it is valid.
            Only cheap checks belong here (no data read, no model built).
    """

    help: str
    flag: str | None = None
    choices: tuple | Callable[[], tuple] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    noun: str | None = None
    check: Callable[[Any], str | None] | None = None

    def valid_choices(self) -> tuple | None:
        return self.choices() if callable(self.choices) else self.choices


def option(default, help: str, **limits) -> Any:
    """A dataclass field with a default, help text and limits (see :class:`Option`)."""
    return dataclasses.field(default=default, metadata={_METADATA_KEY: Option(help, **limits)})


@dataclasses.dataclass(frozen=True)
class Spec:
    """One option of a section: its field name, flag name, value type and :class:`Option`."""

    name: str
    flag: str
    type: type  # int, float, bool, str, or tuple
    optional: bool  # None is a valid value
    item_type: type | None  # of a tuple's items: str, int or float
    default: Any
    option: Option


def specs(section_type) -> Iterator[Spec]:
    """The options of a dataclass type, in declaration order."""
    hints = typing.get_type_hints(section_type)
    for field in dataclasses.fields(section_type):
        meta = field.metadata.get(_METADATA_KEY)
        if meta is None:
            continue
        base, optional, item = _base_type(hints[field.name])
        yield Spec(field.name, meta.flag or field.name, base, optional, item, field.default, meta)


def _base_type(annotation) -> tuple[type, bool, type | None]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple:
        return tuple, False, args[0]
    if type(None) in args:  # X | None
        (inner,) = [a for a in args if a is not type(None)]
        base, _, item = _base_type(inner)
        return base, True, item
    return annotation, False, None


def problems(section) -> list[str]:
    """What is wrong with each option's value, one sentence each (empty: nothing)."""
    found = []
    for spec in specs(type(section)):
        value = getattr(section, spec.name)
        if value is None and spec.optional:
            continue
        found += _value_problems(spec, value)
    return found


def _value_problems(spec: Spec, value) -> list[str]:
    opt = spec.option
    if opt.check is not None:
        problem = opt.check(value)
        if problem:
            return [problem]
    choices = opt.valid_choices()
    if spec.type is tuple:
        noun = opt.noun or spec.flag.removesuffix("s")
        bad = [v for v in value if choices is not None and v not in choices]
        return [f"unknown {noun} {v!r} (valid: {', '.join(choices)})" for v in bad]
    if choices is not None and value not in choices:
        return [f"unknown {spec.flag} {value!r} (valid: {', '.join(map(str, choices))})"]
    if spec.type in (int, float):
        # NaN passes every bound (each comparison is False), and no rate, weight, λ or τ is
        # infinite: either would reach training and poison it (a NaN weight decay, an inf τ).
        if not math.isfinite(value):
            return [f"{spec.flag} must be a finite number, got {value}"]
        if opt.exclusive_minimum is not None and not value > opt.exclusive_minimum:
            return [f"{spec.flag} must be > {_bound(opt.exclusive_minimum)}, got {value}"]
        if opt.minimum is not None and value < opt.minimum:
            return [f"{spec.flag} must be >= {_bound(opt.minimum)}, got {value}"]
        if opt.maximum is not None and value > opt.maximum:
            return [f"{spec.flag} must be <= {_bound(opt.maximum)}, got {value}"]
    return []


def _bound(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"  # 2147483647, not 2.14748e+09


def serialize(spec: Spec, value) -> str | None:
    """The flagfile line giving ``value`` to this option (None: leave it at its default)."""
    if value is None:
        return None
    if spec.type is bool:
        return f"--{spec.flag}" if value else f"--no{spec.flag}"
    if spec.type is tuple:
        return f"--{spec.flag}={','.join(map(str, value))}"
    return f"--{spec.flag}={value!r}" if spec.type is float else f"--{spec.flag}={value}"


def coerce(spec: Spec, value):
    """A flag's or a JSON file's value as the field's type (lists become tuples)."""
    if value is None:
        return None
    if spec.type is tuple:
        try:
            return tuple(spec.item_type(v) for v in value)
        except ValueError:  # "--image_size=28,x": a user's typo, not a bug
            raise ConfigError(
                f"--{spec.flag} takes {spec.item_type.__name__} values separated by commas, "
                f"got {','.join(map(str, value))!r}."
            ) from None
    if spec.type is float:
        return float(value)
    return value
