"""Fixtures for the workflow tests: a local host at the scripted model's default pace, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.devhost_process import DevHostProcess


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workflows")


@pytest.fixture(scope="module")
def host(workdir: Path) -> Iterator[DevHostProcess]:
    """A local host with the default scripted pace (40 ms a chunk) and a small revision limit."""
    process = DevHostProcess.start(workdir, env={"TRIP_PLANNER_MAX_REVISIONS": "2"}, name="workflows")
    yield process
    process.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client
