"""Names for benchmark outputs that never overwrite a committed result.

A benchmark run writes new files next to the committed ones (``tag.json``, then
``tag_2.json``, ``tag_3.json``...) unless the user names the output explicitly: results
in ``benchmarks/`` are the evidence behind the README's tables, and a smoke run with
default arguments must not silently replace them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable


def unused_stem(stem: str, paths: Callable[[str], Iterable[Path]]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``...: the first for which none of ``paths(stem)`` exists."""
    candidate, number = stem, 1
    while any(Path(p).exists() for p in paths(candidate)):
        number += 1
        candidate = f"{stem}_{number}"
    return candidate


def unused_path(path: Path) -> Path:
    """``path``, or the same name with ``_2``, ``_3``... before the suffix when it exists."""
    path = Path(path)
    return path.with_name(unused_stem(path.stem, lambda stem: [path.with_name(stem + path.suffix)]) + path.suffix)
