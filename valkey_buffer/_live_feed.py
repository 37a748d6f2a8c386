"""One process-wide live feed per event loop: a dedicated read connection fanned out in memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from glide import ClosingError, ClusterBatch, StreamReadOptions

from ._chunk import StreamChunk
from ._connection import GlideAnyClient
from ._ids import entry_id_after

logger = logging.getLogger("valkey_buffer")


class Subscription:
    """One reader's place in the live feed: chunks after ``position`` arrive in ``queue``.

    A malformed entry arrives as ``None`` (it still moves the position). The feed puts a
    ``TimeoutError`` in the queue when nothing arrived for ``idle_seconds``, and its own exception
    when it gave up reading, so a waiting reader needs no timer of its own.
    """

    def __init__(self, key: str, position: str, idle_seconds: float) -> None:
        self.key = key
        self.position = position
        self.order = entry_id_after(position)
        self.idle_seconds = idle_seconds
        self.deadline = time.monotonic() + idle_seconds
        self.queue: asyncio.Queue[StreamChunk | BaseException | None] = asyncio.Queue()

    async def next_chunk(self) -> StreamChunk | None:
        """The next chunk; an ``error`` chunk when the reader was idle too long or the feed failed."""
        item = self.queue.get_nowait() if not self.queue.empty() else await self.queue.get()
        if isinstance(item, TimeoutError):
            message = f"no new entries for {self.idle_seconds:g} s: the producer may have stopped"
            return StreamChunk(entry_id="", kind="error", error=message)
        if isinstance(item, BaseException):
            return StreamChunk(entry_id="", kind="error", error=f"Valkey is unavailable: {item}")
        return item

    def deliver(self, entries: list[tuple[tuple[int, int], str, StreamChunk | None]], now: float) -> None:
        for order, entry_id, chunk in entries:
            if order > self.order:
                self.queue.put_nowait(chunk)
                self.position, self.order = entry_id, order
                self.deadline = now + self.idle_seconds


class LiveFeed:
    """Follows every stream that has live readers over one connection and fans entries out.

    Standalone: one blocking multi-key ``XREAD`` on a client of its own (a blocking read stalls
    every other command on its client, so writes never share it). When a reader joins, the
    pending read is cut short with ``CLIENT UNBLOCK`` so the new key is read at once.

    Cluster: a multi-key ``XREAD`` must stay within one hash slot, so the feed polls instead: one
    pipelined, non-blocking ``XREAD`` per followed stream on its own cluster client, repeated at
    once while entries flow and, while all is quiet, after a pause that doubles from
    ``poll_interval`` up to ``max_poll_interval``.

    Args:
        connect: Creates the feed's client (called lazily, again after a failure).
        parse: Turns an entry into a chunk (``None`` when malformed); called once per entry.
        unblock: Sends ``CLIENT UNBLOCK <id>`` over another connection.
        block_ms: How long one blocking read waits.
        cluster: Whether the server is a cluster.
        give_up_seconds: How long reads may keep failing before the readers get an error.
        poll_interval: Cluster only: the first pause after a poll that found nothing.
        max_poll_interval: Cluster only: the longest pause between polls.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[GlideAnyClient]],
        parse: Callable[[str, Any], StreamChunk | None],
        unblock: Callable[[int], Awaitable[bool]],
        *,
        block_ms: int,
        cluster: bool,
        give_up_seconds: float,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.05,
        batch_count: int = 512,
    ) -> None:
        self._connect = connect
        self._parse = parse
        self._unblock = unblock
        self._block_ms = block_ms
        self._cluster = cluster
        self._give_up_seconds = give_up_seconds
        self._poll_interval = poll_interval
        self._max_poll_interval = max_poll_interval
        self._batch_count = batch_count
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._client: GlideAnyClient | None = None
        self._client_id: int | None = None
        self._blocked = False
        self._round = 0
        self._task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None

    def subscribe(self, key: str, position: str, idle_seconds: float) -> Subscription:
        """Follow ``key`` for a reader that has already read up to ``position``.

        The reader gets a ``TimeoutError`` in its queue when no entry arrives for ``idle_seconds``.
        """
        subscription = Subscription(key, position, idle_seconds)
        is_new_key = key not in self._subscriptions
        self._subscriptions.setdefault(key, set()).add(subscription)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._follow(), name="valkey-live-feed")
        if self._idle_task is None or self._idle_task.done():
            self._idle_task = loop.create_task(self._expire_idle_readers(), name="valkey-live-feed-idle")
        elif is_new_key and self._blocked:
            asyncio.get_running_loop().create_task(self._cut_short(self._round))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to a reader."""
        readers = self._subscriptions.get(subscription.key)
        if readers is None:
            return
        readers.discard(subscription)
        if not readers:
            del self._subscriptions[subscription.key]

    async def aclose(self) -> None:
        """Stop following and close the feed's client."""
        for task in (self._task, self._idle_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _cut_short(self, read_round: int) -> None:
        # CLIENT UNBLOCK travels on another connection and may overtake the XREAD it is meant to
        # cut short (it then answers 0): try again until that read has started or has ended.
        for _ in range(100):
            if self._round != read_round or not self._blocked or self._client_id is None:
                return
            with contextlib.suppress(Exception):
                if await self._unblock(self._client_id):
                    return
            await asyncio.sleep(0.002)

    async def _follow(self) -> None:
        failing_since: float | None = None
        idle_polls = 0
        while self._subscriptions:
            try:
                if self._client is None:
                    self._client = await self._connect()
                if self._client_id is None and not self._cluster:
                    self._client_id = int(await self._client.custom_command(["CLIENT", "ID"]))
                found = await self._read_round(self._client)
                failing_since = None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # A reconnected client has a new id; a closed one must be replaced.
                self._client_id = None
                if isinstance(error, ClosingError):
                    self._client = None
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= self._give_up_seconds:
                    logger.warning("Live feed gives up after %.1f s of failed reads: %s", now - failing_since, error)
                    self._fail_everyone(error)
                    failing_since = None
                await asyncio.sleep(0.1)
                continue
            if self._cluster:
                # Poll fast while entries flow; back off (up to max_poll_interval) while all is quiet.
                idle_polls = 0 if found else idle_polls + 1
                if idle_polls:
                    await asyncio.sleep(min(self._poll_interval * 2 ** (idle_polls - 1), self._max_poll_interval))

    async def _read_round(self, client: GlideAnyClient) -> bool:
        positions = {key: min(readers, key=lambda s: s.order).position for key, readers in self._subscriptions.items()}
        if self._cluster:
            results = await self._poll(client, positions)
        else:
            options = StreamReadOptions(block_ms=self._block_ms, count=self._batch_count)
            self._round += 1
            self._blocked = True
            try:
                reply = await client.xread(positions, options)
            finally:
                self._blocked = False
            results = dict(reply or {})
        for raw_key, entries in results.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            decoded = []
            for raw_id, fields in entries.items():
                entry_id = _text(raw_id)
                decoded.append((entry_id_after(entry_id), entry_id, self._parse(entry_id, fields)))
            now = time.monotonic()
            for subscription in list(self._subscriptions.get(key, ())):
                subscription.deliver(decoded, now)
        return bool(results)

    async def _poll(self, client: Any, positions: dict[str, str]) -> dict[Any, Any]:
        batch = ClusterBatch(is_atomic=False)
        keys = list(positions)
        for key in keys:
            batch.xread({key: positions[key]}, StreamReadOptions(count=self._batch_count))
        replies = await client.exec(batch, raise_on_error=True) or []
        results: dict[Any, Any] = {}
        for reply in replies:
            results.update(reply or {})
        return results

    async def _expire_idle_readers(self) -> None:
        # One timer for all readers instead of one per waiting reader: checked often enough for
        # the shortest idle time (to a tenth of it), at most once a second.
        while self._subscriptions:
            now = time.monotonic()
            shortest = 1.0
            for readers in list(self._subscriptions.values()):
                for subscription in readers:
                    shortest = min(shortest, subscription.idle_seconds / 10)
                    if now >= subscription.deadline:
                        subscription.deadline = float("inf")  # tell it once
                        subscription.queue.put_nowait(TimeoutError())
            await asyncio.sleep(max(0.01, shortest))

    def _fail_everyone(self, error: BaseException) -> None:
        for readers in self._subscriptions.values():
            for subscription in readers:
                subscription.queue.put_nowait(error)
        self._subscriptions.clear()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
