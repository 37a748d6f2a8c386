"""Valkey's MONITOR feed, recorded in the background: which commands a host sent, and when."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass

_ARGUMENT = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class MonitoredCommand:
    """One command as MONITOR reported it, with the moment this process received it."""

    received: float  # time.monotonic()
    arguments: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.arguments[0].upper() if self.arguments else ""


class ValkeyMonitor:
    """Records every command a Valkey server executes (``MONITOR``) until :meth:`close`.

    Args:
        address: ``host:port`` of the server.
    """

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._sock = socket.create_connection((host, int(port)), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._file = self._sock.makefile("rb")
        if self._file.readline().strip() != b"+OK":
            raise RuntimeError(f"MONITOR was refused by {address}")
        self._sock.settimeout(None)
        self._commands: list[MonitoredCommand] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._record, name="valkey-monitor", daemon=True)
        self._thread.start()

    def commands(self, since: float = 0.0) -> list[MonitoredCommand]:
        """The commands received at or after ``since`` (a ``time.monotonic()`` value)."""
        with self._lock:
            return [command for command in self._commands if command.received >= since]

    def keys_read(self, since: float = 0.0) -> set[str]:
        """The stream keys named by ``XREAD`` commands received at or after ``since``."""
        keys: set[str] = set()
        for command in self.commands(since):
            if command.name == "XREAD" and "STREAMS" in (a.upper() for a in command.arguments):
                upper = [a.upper() for a in command.arguments]
                streams = command.arguments[upper.index("STREAMS") + 1 :]
                keys.update(streams[: len(streams) // 2])
        return keys

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)

    def _record(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in self._file:
                # +1700000000.123456 [0 127.0.0.1:50000] "XREAD" "BLOCK" "200" ...
                arguments = tuple(match.group(1) for match in _ARGUMENT.finditer(line.decode("utf-8", "replace")))
                with self._lock:
                    self._commands.append(MonitoredCommand(time.monotonic(), arguments))
