"""Quantities as users type them (``375k`` parameters, ``1.5M``, ``10:20`` frames) and as
nnc prints them (``1 frame``, ``1,024 frames``)."""

from __future__ import annotations

import re

from .errors import NncError

SI_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}

FRAMES_HELP = ("N: the first N frames; START:STOP: frames START (inclusive) to STOP (exclusive), counted from 0, "
               "either side may be left out (10: to the end, :20 the first 20).")


def parse_count(text: str) -> float | None:
    """``375k``, ``1.5M``, ``200000`` (case-insensitive suffix k, M, G) -> the number, or
    None when ``text`` is not written that way (the caller words the error)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)", text.strip().lower())
    return None if match is None else float(match[1]) * SI_SUFFIXES[match[2]]


def parse_frame_size(text: str, option: str, example: str) -> tuple[int, int]:
    """``WxH`` (width first, as ffmpeg's -video_size; ``x`` or ``X``, spaces allowed) ->
    (width, height), both at least 1; NncError naming ``option`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise NncError(f"{option} {text!r}: expected WIDTHxHEIGHT, e.g. {example}")
    return int(match[1]), int(match[2])

def parse_frame_range(value, option: str = "--frames") -> tuple[int, int | None] | None:
    """The one meaning of ``--frames`` (encode, decode, eval): ``N`` -> (0, N), the first N
    frames; ``START:STOP`` -> (START, STOP), STOP exclusive, either side may be empty as in
    a Python slice (``10:`` -> (10, None), ``:20`` -> (0, 20)).  None stays None; an int is N;
    a (start, stop) pair is checked the same way."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise NncError(f"{option} {tuple(value)!r}: expected (START, STOP)")
        start, stop = value
        start = 0 if start is None else start
        if not _is_index(start) or not (stop is None or _is_index(stop)):
            raise NncError(f"{option} {tuple(value)!r}: START and STOP must be whole numbers >= 0 (STOP may be None)")
        start, stop = int(start), None if stop is None else int(stop)
    elif _is_index(value):
        start, stop = 0, int(value)
    else:
        text = str(value).strip()
        if match := re.fullmatch(r"(\d*):(\d*)", text):
            start = int(match[1]) if match[1] else 0
            stop = int(match[2]) if match[2] else None
        elif text.isdigit():
            start, stop = 0, int(text)
        else:
            raise NncError(f"{option} {value!r}: expected N (the first N frames) or START:STOP, e.g. 10:20")
    if stop is not None and stop <= start:
        raise NncError(f"{option} {value if isinstance(value, str) else (start, stop)!r}: "
                       + ("must be at least 1 frame" if start == 0 else "STOP must be greater than START"))
    return start, stop


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``plural(1, "frame")`` -> ``1 frame``; ``plural(1024, "frame")`` -> ``1,024 frames``."""
    return f"{count:,} {noun if count == 1 else (plural_noun or noun + 's')}"
