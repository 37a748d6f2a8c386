"""The local host's command line: start-up banner, Ctrl-C stops every part, a port in use is one plain line."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.devhost_process import PROJECT_ROOT, DevHostProcess, port_accepts


def test_banner_says_what_runs_where_and_ctrl_c_stops_everything(devhost_workdir: Path) -> None:
    host = DevHostProcess.start(devhost_workdir, name="ctrl-c")
    banner = host.log()
    valkey, backend = host.info["valkey"], host.info["backend"]
    assert f"URL       {host.url}" in banner
    assert "/api/chat" in banner
    assert f"Valkey    {valkey} (embedded valkey-server" in banner
    assert f"on {backend} (started here)" in banner
    assert "Model     " in banner and "scripted" in banner.lower()
    assert port_accepts(valkey) and port_accepts(backend)

    assert host.stop(timeout=30) == 0
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
