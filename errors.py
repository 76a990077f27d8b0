"""Errors that reach the user as one line (``nnc: <message>``) and a non-zero exit.

Exit codes of the ``nnc`` command (one table; README.md's "Commands" repeats it):

====  =====================================================================================
code  meaning
====  =====================================================================================
0     success
1     an nnc error: a bad option value, an option the codec does not have, a failed job
      of ``nnc report``, any :class:`NncError` without a code of its own
2     a usage error reported by click (unknown option, missing argument, bad choice), never
      by nnc itself
3     an invalid, corrupt, truncated or newer-format ``.nnc`` file (:class:`InvalidBitstreamError`)
4     out of memory (CPU or GPU), with advice
5     media that cannot be read or written: a missing or unreadable input, a refused
      output, decode bounds (``--max-pixels``, ``--max-output-bytes``) (:class:`MediaError`)
70    an internal error (a bug; NNC_DEBUG=1 shows the traceback)
128+N stopped by signal N after cleaning up (130 Ctrl-C, 143 ``kill``, 129 SIGHUP)
====  =====================================================================================
"""

EXIT_NNC_ERROR = 1
EXIT_USAGE = 2  # click's own
EXIT_INVALID_FILE = 3
EXIT_OUT_OF_MEMORY = 4
EXIT_MEDIA_ERROR = 5
EXIT_INTERNAL_ERROR = 70


class NncError(Exception):
    """Base class of every error nnc reports to the user without a traceback."""

    exit_code = EXIT_NNC_ERROR


class InvalidBitstreamError(NncError):
    """A file that is truncated, corrupted, foreign or out of the format's bounds."""

    exit_code = EXIT_INVALID_FILE

    def __init__(self, reason: str):
        super().__init__(f"not a valid .nnc file: {reason}")
        self.reason = reason


class NewerFormatError(InvalidBitstreamError):
    """A file written by a newer version of the format than this nnc reads."""


class MediaError(NncError):
    """Input media that cannot be read, or output that cannot be written."""

    exit_code = EXIT_MEDIA_ERROR
