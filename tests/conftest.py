"""Fixtures shared by every test: real Valkey servers (standalone and cluster), and the OpenTelemetry SDK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.otel_capture import OtelCapture
from tests.valkey_servers import ValkeyCluster, ValkeyProcess
from valkey_buffer import ValkeySettings


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyProcess]:
    """A standalone valkey-server shared by the whole session (tests use distinct keys)."""
    server = ValkeyProcess().start()
    yield server
    server.stop()


@pytest.fixture
def valkey_settings(valkey_server: ValkeyProcess) -> ValkeySettings:
    """Settings that point at the session's standalone server, with short test timeouts."""
    return ValkeySettings(
        host=valkey_server.host, port=valkey_server.port, read_block_ms=1000, read_idle_timeout_seconds=5.0
    )


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    """Three primaries on loopback, slots assigned by the fixture."""
    cluster = ValkeyCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_settings(valkey_cluster: ValkeyCluster) -> ValkeySettings:
    return ValkeySettings(
        host=valkey_cluster.host, port=valkey_cluster.port, cluster=True, read_idle_timeout_seconds=5.0
    )


@pytest.fixture(scope="session")
def otel_sdk() -> OtelCapture:
    """The OpenTelemetry SDK with in-memory span exporter and metric reader, installed for the rest of the session."""
    return OtelCapture()


@pytest.fixture
def otel(otel_sdk: OtelCapture) -> Iterator[OtelCapture]:
    """The SDK, keeping the spans that end during this test."""
    otel_sdk.start()
    yield otel_sdk
    otel_sdk.stop()
