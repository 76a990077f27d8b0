"""nnc: neural video and image codecs with one shared, versioned bitstream format."""

import warnings

__version__ = "0.1.0"

# compressai (1.2.8) decorates functions with torch.jit.script at import, which torch
# 2.14 deprecates with a FutureWarning on stderr.  It is a note for compressai's
# authors, not for nnc's users, and it would break the one-line error contract of the
# `nnc` command, so exactly that message is silenced.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
