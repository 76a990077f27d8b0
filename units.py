"""Quantities as users type them: ``375k`` parameters, ``1.5M``."""

from __future__ import annotations

import re

SI_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_count(text: str) -> float | None:
    """``375k``, ``1.5M``, ``200000`` (case-insensitive suffix k, M, G) -> the number, or
    None when ``text`` is not written that way (the caller words the error)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)", text.strip().lower())
    return None if match is None else float(match[1]) * SI_SUFFIXES[match[2]]
