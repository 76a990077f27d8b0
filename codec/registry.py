"""Registry of named codecs: ``nnc encode --model NAME`` and the bitstream's codec field."""

from __future__ import annotations

from ..errors import InvalidBitstreamError, NncError

_CODECS: dict[str, type] = {}


def register_codec(name: str):
    """Class decorator registering a codec class under ``name``."""

    def wrap(cls):
        if name in _CODECS:
            raise RuntimeError(f"codec {name!r} registered twice")
        cls.name = name
        _CODECS[name] = cls
        return cls

    return wrap


def _load_builtin_codecs() -> None:
    # Imported for their registration side effect; kept lazy so `nnc --help` stays fast.
    from . import hnerv  # noqa: F401
    from . import nerv  # noqa: F401  (registers nerv and nervpp)


def available_codecs() -> list[str]:
    _load_builtin_codecs()
    return sorted(_CODECS)


def get_codec(name: str, *, from_file: bool = False):
    """The codec class registered as ``name``.

    ``from_file`` selects the error: an unknown name typed by the user is a usage error,
    an unknown name read from a file means the file is foreign or from a newer nnc.
    """
    _load_builtin_codecs()
    try:
        return _CODECS[name]
    except KeyError:
        if from_file:
            raise InvalidBitstreamError(f"unknown codec {name!r} (written by a newer nnc?)") from None
        raise NncError(f"unknown model {name!r}; available: {', '.join(sorted(_CODECS))}") from None
