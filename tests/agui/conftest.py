"""The local host the AG-UI client tests run against (the end-to-end tests' fixtures), and the client's check."""

from __future__ import annotations

import os

import pytest

from tests.agui.agui_node import client_missing
from tests.e2e.conftest import agent_name, devhost, devhost_workdir

__all__ = ["agent_name", "client_ready", "devhost", "devhost_workdir"]


@pytest.fixture(scope="module")
def client_ready() -> None:
    """Skip (in one line) without node or the client package; fail instead under ``CI=true``."""
    reason = client_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
