"""What every model config shares: it travels in the bitstream header as a JSON object,
so parsing it back must check every value (the header is untrusted input).

Every field of a config dataclass states its type in its annotation (``int``,
``float``, ``bool``, ``str``, ``list[int]``, ``list[float]``) and its range in its
metadata (:func:`config_field`); ONE routine, :func:`check_fields`, checks all of them
for every codec: real ints (a bool is not 1), finite floats (an int is accepted, and
compared exactly, so 10**39 is "out of range", not an OverflowError), strings from a
fixed choice or at least valid UTF-8 (no lone surrogates), lists of a bounded length
whose items are checked the same way.  What depends on several fields (kernels odd,
output size, parameter count) is each class's :meth:`ModelConfig.check_consistency`,
run only once every field has passed.  Every failure is a one-line ValueError.
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, asdict, field, fields

_SPEC_KEY = "nnc_bounds"
_SHOWN_CHARS = 40


def config_field(default=MISSING, *, low=None, high=None, length=None, choices=None,
                 default_factory=MISSING):
    """A dataclass field with the bounds :func:`check_fields` enforces.

    ``low``/``high``: inclusive range of an int or float (of each item, for a list);
    ``length``: (min, max) items of a list; ``choices``: the allowed values of a str.
    """
    spec = {"low": low, "high": high, "length": length, "choices": tuple(choices) if choices else None}
    return field(default=default, default_factory=default_factory, metadata={_SPEC_KEY: spec})


def _show(value) -> str:
    """A short, printable (ASCII) rendering of an untrusted value for a one-line error."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return f"a {value.bit_length()}-bit integer"
    try:
        text = ascii(value)
    except (ValueError, RecursionError):  # e.g. an int beyond Python's digit limit
        text = type(value).__name__
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _check_value(name: str, value, kind, spec: dict) -> None:
    def fail(problem: str):
        raise ValueError(f"model config {name}={_show(value)} {problem}")

    origin = typing.get_origin(kind)
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        if type(value) is not list:
            fail("must be a list")
        low, high = spec["length"] or (0, 64)
        if not low <= len(value) <= high:
            fail(f"must have {low} to {high} items")
        for index, item in enumerate(value):
            _check_value(f"{name}[{index}]", item, item_kind, spec)
        return
    if kind is bool:
        if type(value) is not bool:
            fail("must be true or false")
        return
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            fail("must be an integer")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            fail("must be finite")
    elif kind is str:
        if type(value) is not str:
            fail("must be a string")
        if spec["choices"] is not None:
            if value not in spec["choices"]:
                fail(f"is not one of {', '.join(spec['choices'])}")
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                fail("is not valid text")
        return
    else:  # a programming error in a config class, not bad input
        raise TypeError(f"config field {name}: unsupported type {kind!r}")
    # Python compares ints and floats exactly, so a huge int cannot overflow here.
    low, high = spec["low"], spec["high"]
    if low is None or high is None:
        raise TypeError(f"config field {name} has no range (declare it with config_field)")
    if not low <= value <= high:
        fail(f"outside [{low}, {high}]")


def _field_kinds(cls) -> dict:
    kinds = cls.__dict__.get("_nnc_field_kinds")
    if kinds is None:
        kinds = typing.get_type_hints(cls)
        cls._nnc_field_kinds = kinds
    return kinds


def check_fields(config) -> None:
    """Check every field of a config dataclass against its annotation and bounds."""
    kinds = _field_kinds(type(config))
    for item in fields(config):
        spec = item.metadata.get(_SPEC_KEY)
        if spec is None:
            raise TypeError(f"{type(config).__name__}.{item.name} has no bounds (declare it with config_field)")
        _check_value(item.name, getattr(config, item.name), kinds[item.name], spec)


def check_int(name: str, value, low: int, high: int) -> None:
    """``value`` must be a real int (not a bool) in [low, high] (for checks that depend
    on other fields, inside ``check_consistency``)."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"model config {name}={_show(value)} outside [{low}, {high}]")


class ModelConfig:
    """Mixin for config dataclasses: ``to_dict`` and a validating ``from_dict``.

    Subclasses declare every field with :func:`config_field` and put checks that
    involve several fields in ``check_consistency()``.
    """

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """Parse and check a config read from a bitstream header (untrusted): a
        ValueError with a one-line message on anything wrong, never another exception."""
        if not isinstance(data, dict):
            raise ValueError("model config is not an object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config fields {_show(sorted(map(str, unknown)))}")
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        """Every field by type and range, then the cross-field rules."""
        check_fields(self)
        self.check_consistency()

    def check_consistency(self) -> None:
        """Rules that involve several fields; runs after every field passed."""
