"""Clients that drop their stream leave nothing behind in the local host: no reader goes on following Valkey."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.devhost_process import DevHostProcess
from tests.e2e.sse_turns import agent_names, committed_turn, follow_turn, start_turn
from tests.e2e.valkey_monitor import ValkeyMonitor
from tests.eventually import eventually_blocking

DROPPED_CLIENTS = 8
# Heartbeats far apart: a reader left behind by a dropped client would only notice at the next one.
# Short blocking reads: the live feed re-reads (and names every followed stream) five times a second.
SETTINGS = {"STREAM_HEARTBEAT_SECONDS": "60", "VALKEY_READ_BLOCK_MS": "200", "SCRIPTED_CHUNK_DELAY_MS": "5"}


@pytest.fixture(scope="module")
def host(devhost_workdir: Path) -> Iterator[DevHostProcess]:
    host = DevHostProcess.start(devhost_workdir, env=SETTINGS, name="disconnects")
    yield host
    host.stop()


def _open_stream(host: DevHostProcess, session_id: str) -> socket.socket:
    """A client that asks for a session's stream, reads the response head and stays connected."""
    client = socket.create_connection(("127.0.0.1", host.port), timeout=10)
    request = (
        f"GET /api/agent/stream/{session_id}?correlation_id={uuid.uuid4().hex} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    client.sendall(request.encode())
    assert client.recv(64).startswith(b"HTTP/1.1 200"), "the stream did not start"
    return client


def test_clients_that_drop_mid_stream_leave_no_reader_behind(host: DevHostProcess) -> None:
    monitor = ValkeyMonitor(host.info["valkey"])
    try:
        # Readers waiting for the first entry of turns that have not started: they follow the streams live.
        keys = {f"agent-stream:{uuid.uuid4().hex}" for _ in range(DROPPED_CLIENTS)}
        clients = [_open_stream(host, key.partition(":")[2]) for key in keys]
        eventually_blocking(
            lambda: keys <= monitor.keys_read(), timeout=10, message="the readers never followed their streams live"
        )

        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
        time.sleep(1.0)  # the host hears of the disconnects; a blocking read already sent (200 ms) returns
        window_start = time.monotonic()
        time.sleep(2.0)

        followed_after_the_drop = monitor.keys_read(since=window_start) & keys
        assert followed_after_the_drop == set(), f"{len(followed_after_the_drop)} readers outlived their clients"
    finally:
        monitor.close()
    log = host.log()
    assert "already running" not in log
    assert "never retrieved" not in log
    assert "Traceback" not in log


def test_the_host_streams_turns_as_before_after_clients_dropped(host: DevHostProcess) -> None:
    with httpx.Client(timeout=30) as client:
        agent = agent_names(client, host.api)[0]
        session_id, correlation_id = start_turn(client, host.api, agent, "Two days in Porto?")
        turn = follow_turn(client, host.api, session_id, correlation_id, cut_after=[2, 3])
        assert turn.terminal is not None and turn.terminal.event == "done"
        assert turn.text == committed_turn(client, host.api, agent, session_id, correlation_id)["response"]
