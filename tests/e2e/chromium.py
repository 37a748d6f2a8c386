"""Debian's Chromium for the browser tests (through Playwright, never a downloaded browser build)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, sync_playwright

# Debian's Chromium; CHROMIUM_PATH names another build of it (Playwright never downloads one here).
CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"


def chromium_or_skip() -> str:
    """The Chromium executable; without one the calling test skips (a fresh machine) or, under ``CI=true``, fails."""
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) or set CHROMIUM_PATH"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}; CI=true, where the browser test must run", pytrace=False)
    pytest.skip(reason)


@contextmanager
def launched_chromium(executable: str) -> Iterator[Browser]:
    """Headless Chromium at ``executable``, closed afterwards."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()
