"""One formatter and one linter for the whole tree: CI fails on a file ruff would change or flag.

The rules are in pyproject.toml ([tool.ruff]); `ruff format . && ruff check --fix .` makes a tree pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    beside = Path(sys.executable).with_name("ruff")  # the venv's own ruff (the test extra installs it)
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return [found]


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_passes_on_the_tree(command: list[str]) -> None:
    result = subprocess.run([*_ruff(), *command], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
