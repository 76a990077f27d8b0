"""Progress of a training run on stderr: one tqdm bar, shared by every training loop.

The INR loop (:mod:`nnc.codec.training`), NIRVANA's chains of groups (one bar for all
groups, fed from worker processes too) and CLC's training all report through
:class:`ProgressBar`, so how progress is shown is decided in one place.
"""

from __future__ import annotations

import sys

# tqdm.auto: a text bar in a terminal, a widget in a Jupyter notebook (nnc's Python API).
from tqdm.auto import tqdm

# No monitor thread: its atexit join is where a late SIGTERM/SIGINT printed a traceback.
tqdm.monitor_interval = 0


class ProgressBar:
    """A bar of ``total`` steps; ``advance`` moves it and, when given, replaces its text."""

    def __init__(self, total: int, description: str, *, enabled: bool = True, initial: int = 0, unit: str = "it"):
        self._bar = tqdm(total=total, initial=initial, desc=description, unit=unit, file=sys.stderr,
                         disable=not enabled, dynamic_ncols=True, leave=True)

    def advance(self, count: int = 1, text: str | None = None) -> None:
        self._bar.update(count)
        if text is not None:
            self._bar.set_postfix_str(text)

    def set_total(self, total: int) -> None:
        """A new length (a time budget's plan, made after the first steps)."""
        self._bar.total = total
        self._bar.refresh()

    @property
    def position(self) -> int:
        return self._bar.n

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
