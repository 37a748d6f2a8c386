"""A loopback TCP proxy that can hold back replies: Valkey answering slower than a client's timeout.

Requests pass at once; while holding, every reply chunk from the server is delivered ``hold``
seconds after it arrived, in order. The proxy runs its own event loop in a thread, so it keeps
pumping whatever the test's loop is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class SlowReplyProxy:
    """Listens on ``127.0.0.1:port`` and forwards to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hold = 0.0
        self.replies_held = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="slow-reply-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    def hold_replies(self, seconds: float) -> None:
        """Deliver replies that arrive from now on ``seconds`` late (0 to stop holding)."""
        self.hold = seconds

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        pumps = [
            asyncio.ensure_future(_pump(client_reader, server_writer)),
            asyncio.ensure_future(self._delayed_pump(server_reader, client_writer)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_writer, server_writer):
            writer.close()

    async def _delayed_pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send_when_due() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send_when_due())
        try:
            while True:
                data = await reader.read(65536)
                if self.hold:
                    self.replies_held += 1
                queue.put_nowait((time.monotonic() + self.hold, data))
                if not data:
                    await sender
                    return
        finally:
            sender.cancel()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
