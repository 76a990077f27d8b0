"""nnc: neural video and image codecs with one shared, versioned bitstream format."""

import warnings

__version__ = "0.1.0"

# compressai (1.2.8) decorates functions with torch.jit.script at import, which torch
# 2.14 deprecates with a FutureWarning on stderr.  It is a note for compressai's
# authors, not for nnc's users, and it would break the one-line error contract of the
# `nnc` command, so exactly that message is silenced.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

# The Python API (nnc.encode, nnc.decode, nnc.evaluate, nnc.info), loaded on first use so
# that `import nnc` and `nnc --help` do not import torch.
_API = ("encode", "decode", "evaluate", "info")


def __getattr__(name):
    if name in _API:
        import importlib

        # By name, not `from . import api`: the package's own modules import `nnc` for
        # __version__, and a static import here would read as every layer importing api.
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module 'nnc' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
