"""A loopback TCP proxy that can cut every open connection and refuse new ones: a network outage on demand.

Chromium's offline emulation fails new requests but leaves a response that is already streaming
alone, so a browser test that wants its ``EventSource`` to lose the connection mid-answer puts this
between the browser and the host and pulls the plug here.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class TcpCutProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; :meth:`cut` drops everything until :meth:`restore`.

    Args:
        target_port: The port on 127.0.0.1 to forward to.
    """

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down = False
        self._closed = False
        self.cuts = 0
        threading.Thread(target=self._accept_loop, name="cut-proxy", daemon=True).start()

    def cut(self) -> int:
        """Reset every open connection and refuse new ones; return how many were cut."""
        with self._lock:
            self._down = True
            victims = list(self._open)
            self._open.clear()
            self.cuts += 1
        for sock in victims:
            _reset(sock)
        return len(victims)

    def restore(self) -> None:
        """Accept and forward connections again."""
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
            if down:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0 makes close() send a RST, as a dropped link looks to the browser, not a polite FIN;
    # SHUT_RD first wakes the pump thread blocked in recv() on this socket.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()
