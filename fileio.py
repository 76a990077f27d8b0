"""Files nnc writes and reads, handled so that no command can destroy a user's file.

- :func:`refuse_overwriting_inputs`: an output that is the same file as an input
  (through a symlink or a hard link too) is refused before anything is read.
- :func:`output_target`: what an output path really is.  ``-`` is stdout; FIFOs,
  character devices and sockets are *streams*, written straight into (an atomic rename
  would replace them by a regular file, so a streaming reader would get nothing and
  ``-o /dev/null`` run as root would replace /dev/null); a symlink to a regular file is
  followed, so its target is replaced atomically and the link stays a link.
- :func:`write_atomically`: bytes into a regular file through a temporary file and a
  rename (never a half-written or clobbered file), or straight into a stream.
- :func:`terminating_signals_raise`: while a partial output exists, SIGTERM and SIGHUP
  raise :class:`Terminated` (a KeyboardInterrupt, like Ctrl-C) instead of killing the
  process outright, so the cleanup that runs for Ctrl-C removes the partial output.
- :func:`read_at_most`: reads a file, a FIFO or a device without ever holding more than
  a stated number of bytes (``nnc info /dev/urandom`` must not read forever), from one
  handle (a FIFO or stdin cannot be opened twice without losing what was read first).
- :func:`human_size`: a byte count as messages show it (``512 B``, ``3.4 MiB``).

This module sits below media, bitstream and codec and imports nothing from nnc but
:mod:`nnc.errors`.
"""

from __future__ import annotations

import os
import secrets
import signal
import stat
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from .errors import MediaError

STDOUT = "-"
READ_BLOCK_BYTES = 1 << 20

# Signals whose default action kills the process without running Python's cleanup.
# SIGINT already raises KeyboardInterrupt; SIGKILL cannot be caught.
TERMINATING_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


# --------------------------------------------------------------------------- inputs vs output


def refuse_overwriting_inputs(output, inputs) -> None:
    """MediaError if ``output`` is the same file (or folder) as any of ``inputs``.

    Compares device and inode of the existing files, so a symlink, a hard link or a
    different spelling of the path is caught as well.  Call it before reading anything:
    ``nnc encode clip.y4m -o clip.y4m`` must fail at once, not after training.
    Outputs that do not exist yet, stdout (``-``) and streams cannot be an input file.
    """
    if output is None or os.fspath(output) == STDOUT:
        return
    try:
        output_stat = os.stat(output)
    except (OSError, ValueError):
        return  # does not exist (yet), or unreadable: the writer reports that in its own words
    if not (stat.S_ISREG(output_stat.st_mode) or stat.S_ISDIR(output_stat.st_mode)):
        return  # a FIFO or a device is written into, never replaced
    for source in inputs:
        if source is None or os.fspath(source) == STDOUT:
            continue
        try:
            source_stat = os.stat(source)
        except (OSError, ValueError):
            continue
        if os.path.samestat(output_stat, source_stat):
            raise MediaError(
                f"output {os.fspath(output)} is the input {os.fspath(source)} (same file): "
                "refusing to overwrite it; choose another output name"
            )


# --------------------------------------------------------------------------- output targets


@dataclass(frozen=True)
class OutputTarget:
    """Where an output really goes.

    ``path`` is the file to create or replace (a symlink's final target for a regular
    file; the path itself for a new file and for a stream); ``stream`` is True for
    stdout, FIFOs, character devices and sockets, which are written straight into.
    """

    requested: str
    path: str
    stream: bool
    is_stdout: bool = False


def output_target(path) -> OutputTarget:
    """Classify an output path (see :class:`OutputTarget`); MediaError for a block device."""
    requested = os.fspath(path)
    if requested == STDOUT:
        return OutputTarget(requested, requested, stream=True, is_stdout=True)
    # Only a link in the last component needs following: a rename into a linked folder
    # already lands in the right place.  A dangling link: create the file it points to.
    final = os.path.realpath(requested) if os.path.islink(requested) else requested
    try:
        mode = os.stat(final).st_mode
    except (OSError, ValueError):
        return OutputTarget(requested, final, stream=False)  # new file; or the writer reports the error
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        return OutputTarget(requested, requested, stream=True)
    if stat.S_ISBLK(mode):
        raise MediaError(f"cannot write {requested}: it is a block device (refusing to overwrite a disk)")
    return OutputTarget(requested, final, stream=False)


def is_stream_output(path) -> bool:
    """True for ``-`` (stdout), FIFOs, character devices and sockets."""
    return output_target(path).stream


def open_stream(target: OutputTarget):
    """A binary file object writing straight into a stream target (stdout included).

    Stdout is written through a duplicate of file descriptor 1, flushed first, so that
    Python's own buffered stdout and our bytes do not interleave.  OSError -> MediaError.
    """
    if target.is_stdout:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
    try:
        return os.fdopen(os.dup(1), "wb") if target.is_stdout else open(target.path, "wb")
    except OSError as error:
        raise MediaError(f"cannot write {target.requested}: {_reason(error)}") from None


def remove_quietly(path) -> None:
    """Remove a temporary file if it is there; never raises (a read-only or vanished
    folder must not turn a one-line error into a traceback during cleanup)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def temporary_name(path: str) -> str:
    """A hidden, unique name beside ``path`` (same folder, so the rename is atomic)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")


def write_atomically(path, data: bytes) -> int:
    """Write ``data`` to ``path``; returns the number of bytes written.

    A regular file (new, existing, or the target of a symlink) is written under a
    temporary name in the same folder, synced, then renamed over the target: on any
    failure or signal the target is left untouched and no temporary file remains.
    Streams (``-``, FIFOs, devices) are written straight into.  OSError -> MediaError.
    """
    target = output_target(path)
    if target.stream:
        with terminating_signals_raise():
            handle = open_stream(target)
            try:
                handle.write(data)
                handle.close()
            except OSError as error:
                raise MediaError(f"cannot write {target.requested}: {_reason(error)}") from None
            finally:
                if not handle.closed:
                    try:
                        handle.close()
                    except OSError:
                        pass  # the reader went away; the write already reported it
        return len(data)
    if os.path.isdir(target.path):
        raise MediaError(f"cannot write {target.requested}: it is a folder")
    temp = temporary_name(target.path)
    with terminating_signals_raise():
        try:
            # O_EXCL: never clobber a file of the same name; mode 0o666 lets the umask
            # decide the final permissions, as for any ordinary output file.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as error:
            raise MediaError(f"cannot write {target.requested}: {_reason(error)}") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target.path)
        except BaseException as error:
            remove_quietly(temp)
            if isinstance(error, OSError):
                raise MediaError(f"cannot write {target.requested}: {_reason(error)}") from None
            raise
    return len(data)


# --------------------------------------------------------------------------- signals


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while an output was being written.

    A KeyboardInterrupt, so every ``except KeyboardInterrupt``/``finally`` cleanup that
    Ctrl-C runs also runs for ``kill``; ``signum`` tells the caller which signal it was
    (exit status 128 + signum is the shell's convention).
    """

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


_guard_lock = threading.Lock()
_guard_depth = 0
_saved_handlers: dict = {}


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextmanager
def terminating_signals_raise():
    """For the duration of the block, SIGTERM and SIGHUP raise :class:`Terminated`.

    Only signals whose handler is the default (kill the process) are changed: an
    ignored SIGHUP (``nohup``) stays ignored, and a handler the program installed itself
    stays in charge.  Nested and overlapping blocks share one installation, restored
    when the last one ends.  Outside the main thread (where Python cannot install signal
    handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _guard_depth
    with _guard_lock:
        if _guard_depth == 0:
            _saved_handlers.clear()
            for signum in TERMINATING_SIGNALS:
                if signal.getsignal(signum) == signal.SIG_DFL:
                    _saved_handlers[signum] = signal.signal(signum, _raise_terminated)
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                for signum, previous in _saved_handlers.items():
                    signal.signal(signum, previous)
                _saved_handlers.clear()


class SignalGuard:
    """:func:`terminating_signals_raise` for objects whose lifetime is not one block
    (a streaming writer): ``start()`` when the partial output appears, ``stop()`` once
    it is committed or removed.  ``stop()`` is idempotent."""

    def __init__(self):
        self._context = None

    def start(self) -> None:
        if self._context is None:
            self._context = terminating_signals_raise()
            self._context.__enter__()

    def stop(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(None, None, None)


# --------------------------------------------------------------------------- locks


@contextmanager
def exclusive_lock(lock_path, busy: str):
    """Hold an exclusive lock on the file ``lock_path`` (created, and removed at the end)
    for the duration of the block; MediaError(``busy``) at once if another process holds it.

    ``flock`` locks are released by the kernel when a process dies, so a killed run
    never leaves a stale lock (only, after SIGKILL, an unlocked file the next run reuses).
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked
        yield
        return
    name = os.fspath(lock_path)
    while True:
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise MediaError(f"cannot create the lock file {name}: {_reason(error)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MediaError(busy) from None
        except OSError as error:
            os.close(fd)
            raise MediaError(f"cannot lock {name}: {_reason(error)}") from None
        try:  # the holder before us may have removed the file after we opened it: lock the new one
            if os.path.samestat(os.fstat(fd), os.stat(name)):
                break
        except OSError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        remove_quietly(name)  # removed while still locked: nobody can take a stale copy
        os.close(fd)


# --------------------------------------------------------------------------- bounded reads


def read_at_most(path, max_bytes: int, error=MediaError, what: str = "file", *,
                 check_start: Callable[[bytes], None] | None = None, start_bytes: int = 0) -> bytes:
    """The whole content of ``path``, refusing (``error(message)``) beyond ``max_bytes``.

    Works for regular files (refused from their size, unread) and for FIFOs and devices
    such as /dev/urandom, which have no size: those are read in blocks and refused as
    soon as they exceed the bound, so memory stays bounded by ``max_bytes``.

    ``check_start``, if given, is called with the first ``start_bytes`` bytes (fewer if
    the input is shorter) before anything else is read and may raise to refuse a foreign
    file at once.  Everything is read through one handle, so nothing a FIFO or a pipe
    has delivered is lost between that check and the rest of the read.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            blocks, total = [], 0
            if check_start is not None:
                start = handle.read(start_bytes)
                check_start(start)
                blocks.append(start)
                total = len(start)
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > max_bytes:
                raise error(f"{name} is {info.st_size} bytes ({human_size(info.st_size)}), more than any {what} "
                            f"({max_bytes} bytes)")
            while total <= max_bytes:
                block = handle.read(min(READ_BLOCK_BYTES, max_bytes + 1 - total))
                if not block:
                    break
                blocks.append(block)
                total += len(block)
            if total > max_bytes:
                raise error(f"{name} holds more than {max_bytes} bytes ({human_size(max_bytes)}), more than any {what}")
    except IsADirectoryError:
        raise error(f"cannot read {name}: it is a folder") from None
    except OSError as exc:
        raise error(f"cannot read {name}: {_reason(exc)}") from None
    return b"".join(blocks)


# --------------------------------------------------------------------------- messages

_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(count: int | float) -> str:
    """``count`` bytes as people read it: ``0 B``, ``900 B``, ``1.5 KiB``, ``12.3 MiB``,
    ``64.0 GiB`` (binary units, one decimal, the largest unit that keeps the number >= 1).
    The one formatter for sizes in nnc's messages, so no message says "about 0.0 GiB"."""
    value = float(count)
    if abs(round(value)) < 1024:
        return f"{value:.0f} B"
    for unit in _SIZE_UNITS:
        value /= 1024
        if abs(round(value, 1)) < 1024 or unit == _SIZE_UNITS[-1]:  # never "1024.0 KiB"
            return f"{value:.1f} {unit}"
    raise AssertionError("not reached")
