"""The code stays clean for the next reader: ruff on everything, mypy (strict) on valkey_buffer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_valkey_buffer_type_checks_strictly() -> None:
    result = _run("mypy", "--strict", "valkey_buffer")
    assert result.returncode == 0, result.stdout + result.stderr
