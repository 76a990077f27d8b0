"""One-line errors for every ``nnc`` command: the decorator the subcommand modules share.

Kept apart from :mod:`nnc.cli.main` so that subcommand modules (report, train) need not
import ``main``, which imports them (``python -m nnc.cli.main`` would otherwise loop).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback

import click

from ..errors import EXIT_INTERNAL_ERROR, EXIT_OUT_OF_MEMORY, NncError
from ..fileio import Terminated


def reports_errors(function):
    """Turn NncError (and the few expected system failures) into one line and an exit code."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except NncError as error:
            click.echo(f"nnc: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt as interrupt:
            # Ctrl-C is SIGINT; fileio.Terminated carries SIGTERM's or SIGHUP's number.
            signum = getattr(interrupt, "signum", signal.SIGINT)
            message = getattr(interrupt, "nnc_message", None) or (
                f"interrupted by {signal.Signals(signum).name} (an interrupted encode continues with the same "
                "command plus --resume)")
            click.echo(f"nnc: {message}", err=True)
            sys.exit(128 + signum)
        except MemoryError:
            click.echo(f"nnc: {CPU_MEMORY_ADVICE}", err=True)
            sys.exit(EXIT_OUT_OF_MEMORY)
        except Exception as error:  # a bug: keep the one-line contract, offer the traceback
            advice = _out_of_memory_advice(error)
            if advice:
                click.echo(f"nnc: {advice}", err=True)
                sys.exit(EXIT_OUT_OF_MEMORY)
            if os.environ.get("NNC_DEBUG"):
                traceback.print_exc()
            click.echo(f"nnc: internal error: {type(error).__name__}: {error} (set NNC_DEBUG=1 for details)", err=True)
            sys.exit(EXIT_INTERNAL_ERROR)

    return wrapper


def _raise_keyboard_interrupt(signum, frame):
    """Signal handler: SIGTERM/SIGHUP get Ctrl-C's treatment (checkpoint, cleanup) and
    their own exit status (128 + signum)."""
    raise Terminated(signum)


CPU_MEMORY_ADVICE = "out of memory: try a smaller --batch-size, fewer frames (--frames N) or a smaller --params"
GPU_MEMORY_ADVICE = "out of GPU memory: try a smaller --batch-size, fewer frames (--frames N) or --device cpu"
# What torch's allocators say when they fail (CUDA, the CPU allocator, MPS, HIP).
_OUT_OF_MEMORY_TEXT = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")


def _out_of_memory_advice(error: Exception) -> str | None:
    """The one-line advice for an allocation failure, or None for any other error."""
    torch = sys.modules.get("torch")  # only loaded (and only able to fail so) once a codec ran
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    text = str(error).lower()
    if oom_type is not None and isinstance(error, oom_type):
        return GPU_MEMORY_ADVICE
    if isinstance(error, RuntimeError) and any(fragment in text for fragment in _OUT_OF_MEMORY_TEXT):
        on_cpu = "cpu" in text and "cuda" not in text
        return CPU_MEMORY_ADVICE if on_cpu else GPU_MEMORY_ADVICE
    return None


def interrupt_on_termination() -> None:
    """SIGTERM (``kill``) and SIGHUP (a closed terminal) raise like Ctrl-C for the rest of
    the command, so training saves its checkpoint and partial outputs are removed.  An
    ignored SIGHUP (``nohup``) stays ignored."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)
