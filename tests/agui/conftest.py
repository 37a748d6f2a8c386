"""The local host the AG-UI client tests run against: the end-to-end tests' fixtures."""

from tests.e2e.conftest import agent_name, devhost, devhost_workdir

__all__ = ["agent_name", "devhost", "devhost_workdir"]
