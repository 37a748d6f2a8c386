"""A baseline revision's packages, imported beside this checkout's, so that one run measures both."""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_baseline(revision: str, into: Path, packages: tuple[str, ...] = ("valkey_buffer",)) -> list[ModuleType]:
    """Import ``packages`` as they were at ``revision``, each as ``<package>_baseline``.

    The packages are taken from git (``git archive``) into ``into``; their imports of each other are
    renamed too, so that the baseline's ``http_api`` uses the baseline's ``valkey_buffer``.

    Returns:
        The baseline packages, in the order given.
    """
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, *packages], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    imports = re.compile(rf"^(\s*)(from|import) ({'|'.join(packages)})\b", re.MULTILINE)
    for package in packages:
        for path in (into / package).rglob("*.py"):
            path.write_text(imports.sub(r"\1\2 \3_baseline", path.read_text()))
        (into / package).rename(into / f"{package}_baseline")
    sys.path.insert(0, str(into))
    return [importlib.import_module(f"{package}_baseline") for package in packages]
