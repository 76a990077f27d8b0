"""Errors that reach the user as one line (``nnc: <message>``) and a non-zero exit."""


class NncError(Exception):
    """Base class of every error nnc reports to the user without a traceback."""

    exit_code = 1


class InvalidBitstreamError(NncError):
    """A file that is truncated, corrupted, foreign or out of the format's bounds."""

    exit_code = 3

    def __init__(self, reason: str):
        super().__init__(f"not a valid .nnc file: {reason}")
        self.reason = reason


class NewerFormatError(InvalidBitstreamError):
    """A file written by a newer version of the format than this nnc reads."""


class MediaError(NncError):
    """Input media that cannot be read, or output that cannot be written."""

    exit_code = 2
