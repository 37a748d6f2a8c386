"""Fixtures for the end-to-end tests: local hosts (``python -m devhost``) started as real processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.devhost_process import DevHostProcess
from tests.e2e.sse_turns import agent_names

# The scripted model streams about 30 chunks per answer; these paces make a turn last long enough to
# cut it at many points while keeping the suite quick.
FAST_CHUNK_DELAY_MS = "25"


@pytest.fixture(scope="session")
def devhost_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devhost")


@pytest.fixture(scope="session")
def devhost(devhost_workdir: Path) -> Iterator[DevHostProcess]:
    """One local host for most tests: embedded Valkey, in-memory backend, scripted model."""
    host = DevHostProcess.start(devhost_workdir, env={"SCRIPTED_CHUNK_DELAY_MS": FAST_CHUNK_DELAY_MS}, name="main")
    yield host
    host.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client


@pytest.fixture(scope="session")
def agent_name(devhost: DevHostProcess) -> str:
    with httpx.Client(timeout=10) as client:
        return agent_names(client, devhost.api)[0]
