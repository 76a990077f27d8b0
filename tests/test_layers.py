"""The layers of the README's "Layout" hold: import-linter's contracts (pyproject.toml).

cli > eval > codec > metrics > models | media | bitstream, each importing only what lies
below it, the three bottom packages independent of each other, and nnc.errors /
nnc.fileio importing no layer at all.  Running them here puts them in the README's test
command, so a change that imports up a layer fails CI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports() -> str:
    """The lint-imports of the interpreter running the tests (its venv), else one on PATH."""
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]' (import-linter is a dev dependency)")
    return found


def test_import_linter_contracts_are_kept():
    result = subprocess.run([lint_imports(), "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert "0 broken" in output and "BROKEN" not in output, output
