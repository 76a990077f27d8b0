"""Registry of named codecs: ``nnc encode --model NAME`` and the bitstream's codec field.

A new codec is one module under ``codec/`` that defines a :class:`~nnc.codec.base.Codec`
subclass decorated with ``@register_codec("name")``, plus its line in ``_BUILTIN_MODULES``.
"""

from __future__ import annotations

import importlib

from ..errors import InvalidBitstreamError, NncError

_CODECS: dict[str, type] = {}
DEFAULT_CODEC = "hnerv"  # `nnc encode` without --model


def register_codec(name: str):
    """Class decorator registering a codec class under ``name``."""

    def wrap(cls):
        if name in _CODECS:
            raise RuntimeError(f"codec {name!r} registered twice")
        cls.name = name
        _CODECS[name] = cls
        return cls

    return wrap


# Which module registers each built-in codec.  Modules are imported on first use, for
# their registration side effect: `nnc --help` stays fast, and decoding an HNeRV file
# does not pay for importing CLC's compressai models.
_BUILTIN_MODULES = {
    "hnerv": "hnerv",
    "nerv": "nerv",
    "nervpp": "nerv",
    "hinerv": "hinerv",
    "nirvana": "nirvana",
    "pfnr": "pfnr",  # multi-video sets
    "clc": "clc",  # image codec
}


def _load_builtin_codecs(name: str | None = None) -> None:
    """Import the module registering ``name`` (all built-in modules when None or unknown)."""
    if name is not None and name in _CODECS:
        return
    modules = [_BUILTIN_MODULES[name]] if name in _BUILTIN_MODULES else sorted(set(_BUILTIN_MODULES.values()))
    for module in modules:
        importlib.import_module(f"{__package__}.{module}")


def codec_names() -> list[str]:
    """Every codec's name, without importing any codec module (for help texts)."""
    return sorted(set(_BUILTIN_MODULES) | set(_CODECS))


def available_codecs() -> list[str]:
    _load_builtin_codecs()
    return sorted(_CODECS)


def codec_classes(kind=None) -> list[type]:
    """The registered codec classes (of one :class:`~nnc.codec.base.CodecKind`), by name."""
    return [get_codec(name) for name in available_codecs() if kind is None or get_codec(name).kind == kind]


def get_codec(name: str, *, from_file: bool = False):
    """The codec class registered as ``name``.

    ``from_file`` selects the error: an unknown name typed by the user is a usage error,
    an unknown name read from a file means the file is foreign or from a newer nnc.
    """
    _load_builtin_codecs(name if isinstance(name, str) else None)
    try:
        return _CODECS[name]
    except KeyError:
        if from_file:
            raise InvalidBitstreamError(f"unknown codec {name!r} (written by a newer nnc?)") from None
        raise NncError(f"unknown model {name!r}; available: {', '.join(sorted(_CODECS))}") from None
