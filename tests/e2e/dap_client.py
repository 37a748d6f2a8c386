"""A small Debug Adapter Protocol client: what VS Code says to debugpy, enough to set breakpoints and see them hit."""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Message = dict[str, Any]


class DapError(RuntimeError):
    """The adapter refused a request, closed the connection, or did not answer in time."""


class DapClient:
    """One DAP session over TCP (``debugpy --listen``), messages framed with ``Content-Length`` headers.

    Responses are matched to requests by sequence number; events are queued and taken with
    :meth:`wait_event` in the order they arrived.

    Args:
        address: ``(host, port)`` where debugpy listens.
        connect_timeout: Seconds to keep trying to connect (debugpy's adapter takes a moment to listen).
    """

    def __init__(self, address: tuple[str, int], *, connect_timeout: float = 30.0) -> None:
        self._sock = _connect(address, connect_timeout)
        self._seq = itertools.count(1)
        self._send_lock = threading.Lock()
        self._responses: dict[int, queue.Queue[Message]] = {}
        self._responses_lock = threading.Lock()
        self._events: queue.Queue[Message | None] = queue.Queue()
        self._output: list[str] = []
        self._reader = threading.Thread(target=self._read_messages, name="dap-reader", daemon=True)
        self._reader.start()

    def send(self, command: str, arguments: Mapping[str, Any] | None = None) -> queue.Queue[Message]:
        """Send a request; return the queue its response will arrive on (see :meth:`response`)."""
        seq = next(self._seq)
        answer: queue.Queue[Message] = queue.Queue(maxsize=1)
        with self._responses_lock:
            self._responses[seq] = answer
        message: Message = {"seq": seq, "type": "request", "command": command}
        if arguments is not None:
            message["arguments"] = dict(arguments)
        body = json.dumps(message).encode()
        with self._send_lock:
            self._sock.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return answer

    def response(self, answer: queue.Queue[Message], timeout: float = 30.0) -> Message:
        """The response on ``answer``; raises :class:`DapError` when it failed or did not come."""
        try:
            message = answer.get(timeout=timeout)
        except queue.Empty:
            raise DapError(f"no response within {timeout} s") from None
        if not message.get("success"):
            raise DapError(f"{message.get('command')} failed: {message.get('message')}")
        return message

    def request(self, command: str, arguments: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Message:
        """Send a request and wait for its successful response."""
        return self.response(self.send(command, arguments), timeout)

    def wait_event(self, name: str, timeout: float = 30.0, where: Callable[[Message], bool] | None = None) -> Message:
        """Take events until one named ``name`` (and matching ``where``) arrives; earlier ones are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DapError(f"no {name!r} event within {timeout} s")
            try:
                event = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                raise DapError(f"the adapter closed the connection before a {name!r} event")
            if event.get("event") == name and (where is None or where(event)):
                return event

    def attach(
        self,
        breakpoints: Mapping[str, Sequence[int]],
        configuration: Mapping[str, Any] | None = None,
    ) -> dict[str, list[Message]]:
        """Attach as VS Code does (initialize, attach, breakpoints, configurationDone) and let the program run.

        Args:
            breakpoints: Source file path -> line numbers (1-based).
            configuration: The attach request's arguments (``justMyCode``, ``subProcess``...).

        Returns:
            Source file path -> the breakpoints as the adapter answered them (``verified``, ``line``).
        """
        self.request(
            "initialize",
            {
                "clientID": "vscode",
                "adapterID": "debugpy",
                "pathFormat": "path",
                "linesStartAt1": True,
                "columnsStartAt1": True,
                "supportsRunInTerminalRequest": False,
            },
        )
        # debugpy answers attach only after configurationDone; it sends "initialized" in between.
        attached = self.send("attach", dict(configuration or {}))
        self.wait_event("initialized")
        answered = {
            path: self.request(
                "setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": line} for line in lines]}
            )["body"]["breakpoints"]
            for path, lines in breakpoints.items()
        }
        self.request("setExceptionBreakpoints", {"filters": []})
        self.request("configurationDone")
        self.response(attached)
        return answered

    def output(self) -> str:
        """What the program printed so far (stdout and stderr), from the adapter's ``output`` events."""
        return "".join(self._output)

    def thread_names(self) -> dict[int, str]:
        """Thread id -> name, as the debugger's Threads view shows them."""
        return {thread["id"]: thread["name"] for thread in self.request("threads")["body"]["threads"]}

    def top_frame(self, thread_id: int) -> Message:
        """The innermost stack frame of a stopped thread (``source.path``, ``line``, ``name``)."""
        return self.request("stackTrace", {"threadId": thread_id, "levels": 1})["body"]["stackFrames"][0]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(5)

    def __enter__(self) -> DapClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_messages(self) -> None:
        stream = self._sock.makefile("rb")
        try:
            while True:
                length = None
                while True:
                    line = stream.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length is None:
                    return
                message = json.loads(stream.read(length))
                if message.get("type") == "response":
                    with self._responses_lock:
                        answer = self._responses.pop(message.get("request_seq"), None)
                    if answer is not None:
                        answer.put(message)
                elif message.get("type") == "event":
                    body = message.get("body", {})
                    if message.get("event") == "output" and body.get("category") in ("stdout", "stderr"):
                        self._output.append(body.get("output", ""))
                    self._events.put(message)
        except (OSError, ValueError):
            return
        finally:
            self._events.put(None)


def _connect(address: tuple[str, int], timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(address, timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        sock.settimeout(None)  # the reader waits for events as long as it takes
        return sock
