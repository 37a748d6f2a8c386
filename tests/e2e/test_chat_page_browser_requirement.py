"""Without Chromium the browser tests skip in one line each naming the package to install; under CI=true they fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.devhost_process import PROJECT_ROOT

BROWSER_TEST_FILES = ("tests/e2e/test_chat_page_browser.py", "tests/e2e/test_workflow_page_browser.py")
BROWSER_TESTS = sum((PROJECT_ROOT / path).read_text().count("\ndef test_") for path in BROWSER_TEST_FILES)


def _run_browser_test(chromium_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """Run the browser test files in their own pytest, with ``CHROMIUM_PATH`` and ``CI`` as given."""
    env = {name: value for name, value in os.environ.items() if name not in ("CI", "PYTEST_ADDOPTS")}
    env["CHROMIUM_PATH"] = str(chromium_path)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", *BROWSER_TEST_FILES, "-q", "-rsE", "-p", "no:cacheprovider"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_chromium_the_browser_test_skips_naming_the_debian_package(tmp_path: Path) -> None:
    missing = tmp_path / "no-chromium-here"

    result = _run_browser_test(missing, ci=None)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{BROWSER_TESTS} skipped" in result.stdout
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == BROWSER_TESTS, result.stdout  # one line each
    for line in skipped:
        assert "apt-get install chromium" in line and str(missing) in line
    assert "Traceback" not in result.stdout + result.stderr


def test_under_ci_a_missing_chromium_fails_the_browser_test_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-chromium-here"

    result = _run_browser_test(missing, ci="true")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "skipped" not in result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR tests/e2e")]
    assert len(errors) == BROWSER_TESTS, result.stdout
    for error in errors:
        assert "apt-get install chromium" in error and "CI=true" in error and str(missing) in error
    # The reason, not Playwright's launch traceback.
    assert "BrowserType.launch" not in result.stdout


def test_the_ci_entry_runs_the_tests_with_ci_true() -> None:
    lines = [line.strip() for line in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()]
    pytest_run = lines.index(".venv/bin/python -m pytest")
    assert "export CI=true" in lines[:pytest_run]
