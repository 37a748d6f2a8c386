"""A ``python -m devhost`` subprocess on free ports, for tests that drive the app over real HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Settings that must not leak from the developer's shell into a test host: the tests want the offline
# scripted model and, unless they say otherwise, the host's embedded Valkey.
_SCRUBBED = (
    "VALKEY_HOST",
    "VALKEY_PORT",
    "VALKEY_URL",
    "VALKEY_TLS",
    "VALKEY_CLUSTER",
    "VALKEY_USERNAME",
    "VALKEY_PASSWORD",
    "VALKEY_AUTH",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT",
    "STREAM_MAX_DURATION_SECONDS",
    "SCRIPTED_CHUNK_DELAY_MS",
    # Telemetry goes nowhere unless a test asks (see devhost/_telemetry.py).
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SDK_DISABLED",
)


def scrubbed_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the settings above, plus ``env``: what a test host runs with."""
    child_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    child_env.update(env or {})
    return child_env


def run_devhost(args: Sequence[str], env: Mapping[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m devhost`` to its end and capture its output.

    A host that does not end in time is killed with everything it started (an embedded valkey-server
    would outlive a plain kill of the host), then the timeout is raised.
    """
    command = [sys.executable, "-m", "devhost", *args]
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(address: str) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class DevHostProcess:
    """One running local host and where it serves."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        name: str = "devhost",
        timeout: float = 90.0,
        port: int | None = None,
    ) -> DevHostProcess:
        """Start ``python -m devhost`` and wait until its health route answers 200.

        Args:
            workdir: Where the log and ready files go.
            env: Settings on top of a scrubbed copy of this process's environment.
            args: Extra command-line arguments (``--no-worker``, ``--backend``...).
            name: A name for the log file.
            timeout: Seconds to wait for the host to serve.
            port: The HTTP port; a free one by default.
        """
        port = port or free_port()
        ready_file = workdir / f"{name}-{port}.ready.json"
        log_path = workdir / f"{name}-{port}.log"
        # A host that hangs on its way out is sent SIGABRT: this makes it print every thread's stack first.
        child_env = scrubbed_environment({"PYTHONFAULTHANDLER": "1", **(env or {})})
        command = [sys.executable, "-m", "devhost", "--port", str(port), "--ready-file", str(ready_file), *args]
        with open(log_path, "wb") as log:
            # Own session: if the host ever hangs, the whole group (valkey-server included) can go.
            process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        host = cls(process=process, port=port, log_path=log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"devhost exited with {process.returncode}:\n{host.log()}")
            if ready_file.exists():
                host.info = json.loads(ready_file.read_text())
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{host.api}/health", timeout=2).status_code == 200:
                        return host
            time.sleep(0.1)
        host.kill()
        raise RuntimeError(f"devhost did not serve within {timeout} s:\n{host.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """Stop the host as Ctrl-C does and return its exit code (killing the group if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGABRT)  # stacks into the log, for whoever looks
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@contextlib.contextmanager
def host_pair(
    workdir: Path, name: str, *, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
) -> Iterator[tuple[DevHostProcess, DevHostProcess]]:
    """Two local hosts as two instances of one app: A serves HTTP only (no worker); B shares A's
    durable backend and Valkey and runs every agent and orchestration.

    Args:
        workdir: Where the hosts' logs and ready files go.
        name: A name for the log files (``{name}-a``, ``{name}-b``).
        env: Settings for host B (A runs nothing).
        args: Extra command-line arguments for host B.
    """
    host_a = DevHostProcess.start(workdir, args=["--no-worker"], name=f"{name}-a")
    valkey_host, _, valkey_port = host_a.info["valkey"].rpartition(":")
    try:
        host_b = DevHostProcess.start(
            workdir,
            env={"VALKEY_HOST": valkey_host, "VALKEY_PORT": valkey_port, **(env or {})},
            args=["--backend", host_a.info["backend"], *args],
            name=f"{name}-b",
        )
    except Exception:
        host_a.stop()
        raise
    try:
        yield host_a, host_b
    finally:
        host_b.stop()
        host_a.stop()
