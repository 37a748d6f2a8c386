"""Fixtures shared by every test: real Valkey servers (standalone and cluster), buffers closed when the
test ends, and the OpenTelemetry SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.otel_capture import OtelCapture
from tests.valkey_servers import ValkeyCluster, ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer


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


@pytest.fixture
def make_valkey_server() -> Iterator[Callable[[], ValkeyProcess]]:
    """Starts a standalone valkey-server of the test's own (one it may stop, kill or restart); stops them all."""
    started: list[ValkeyProcess] = []

    def make() -> ValkeyProcess:
        started.append(ValkeyProcess().start())
        return started[-1]

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def make_valkey_cluster() -> Iterator[Callable[..., ValkeyCluster]]:
    """Starts a cluster of the test's own, with ``ValkeyCluster``'s arguments; stops them all."""
    started: list[ValkeyCluster] = []

    def make(**options: Any) -> ValkeyCluster:
        started.append(ValkeyCluster(**options).start())
        return started[-1]

    yield make
    for cluster in started:
        cluster.stop()


@pytest.fixture
async def make_buffer(
    make_valkey_server: Callable[[], ValkeyProcess], make_valkey_cluster: Callable[..., ValkeyCluster]
) -> AsyncIterator[Callable[..., ValkeyStreamBuffer]]:
    """Builds ``ValkeyStreamBuffer(settings, **options)``s and closes each one when the test ends.

    It depends on the server factories so that servers a test starts are stopped only after its
    buffers are closed (closing flushes queued entries).
    """
    made: list[ValkeyStreamBuffer] = []

    def make(settings: ValkeySettings, **options: Any) -> ValkeyStreamBuffer:
        made.append(ValkeyStreamBuffer(settings, **options))
        return made[-1]

    yield make
    for buffer in made:
        await buffer.aclose()


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
