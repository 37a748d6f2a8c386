"""The CI entry (.ci/run) tests every supported Python, each in its own environment, and names a missing one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI = (ROOT / ".ci" / "run").read_text()
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _python_for(version: str, path: str, pyenv_root: Path) -> subprocess.CompletedProcess[str]:
    """Run .ci/run's own ``python_for`` with only ``path`` on PATH and pyenv's versions under ``pyenv_root``."""
    script = 'set -euo pipefail; eval "$(sed -n "/^python_for()/,/^}/p" .ci/run)"; python_for "$1"'
    return subprocess.run(
        ["bash", "-c", script, "python_for", version],
        cwd=ROOT,
        env={"PATH": path, "PYENV_ROOT": str(pyenv_root), "HOME": str(pyenv_root)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _pytest_lines(venv: str) -> list[str]:
    return [line for line in CI.splitlines() if line.startswith(f"{venv}/bin/python -m pytest")]


def _readme_test_command() -> str:
    """The one command of the README's ``## Test`` section."""
    section = (ROOT / "README.md").read_text().split("\n## Test\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    [command] = block.splitlines()
    assert command == ".venv/bin/python -m pytest"
    return command


def test_each_environment_gets_its_python_and_runs_its_suite() -> None:
    versions = dict(re.findall(r"^(PY\d+)=\$\(python_for (3\.\d+)\)$", CI, re.MULTILINE))
    assert versions == {"PY312": "3.12", "PY313": "3.13", "PY311": "3.11"}
    environments = dict(re.findall(r"^\s*venv_for (\S+) \"\$(PY\d+)\" requirements-dev\.txt", CI, re.MULTILINE))
    assert environments == {".venv": "PY312", ".venv313": "PY313", ".venv311": "PY311"}

    # The README's test command, on what infra/ deploys by default: the whole suite.
    assert _pytest_lines(".venv") == [_readme_test_command()]
    # The worker library installs only on 3.13, and that run keeps the worker-indexing test.
    assert re.search(r"^\s*venv_for \.venv313 \"\$PY313\" requirements-dev\.txt requirements-worker\.txt$", CI, re.M)
    assert CI.count("requirements-worker.txt") == 1
    # 3.13 and 3.11: every test but the browser one (no paths, no -k, nothing left out).
    for venv in (".venv313", ".venv311"):
        [line] = _pytest_lines(venv)
        assert line.startswith(f'{venv}/bin/python -m pytest -m "not browser" -p no:cacheprovider'), line
        assert not [arg for arg in line.split() if arg.startswith(("tests", "-k", "--ignore", "--deselect"))], line
    assert CI.index("export CI=true") < CI.index("-m pytest")


def test_a_missing_python_fails_in_one_line_that_names_it(tmp_path: Path) -> None:
    # A pythonX.Y on PATH that does not run (as pyenv's shims do for versions not selected) is not taken.
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "python3.99"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.99: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)

    result = _python_for("3.99", f"{shims}:/usr/bin:/bin", tmp_path)

    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(".ci/run: Python 3.99 not found"), result.stderr


def test_pyenvs_interpreter_is_found_by_its_version(tmp_path: Path) -> None:
    interpreter = tmp_path / "versions" / f"{THIS_PYTHON}.0" / "bin" / "python"
    interpreter.parent.mkdir(parents=True)
    interpreter.symlink_to(sys.executable)

    result = _python_for(THIS_PYTHON, "/usr/bin:/bin", tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(interpreter)
    assert os.access(result.stdout.strip(), os.X_OK)
