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

    A malformed entry arrives as ``None`` (it still moves the position); a feed that gave up
    delivers its exception.
    """

    def __init__(self, key: str, position: str) -> None:
        self.key = key
        self.position = position
        self.order = entry_id_after(position)
        self.queue: asyncio.Queue[StreamChunk | BaseException | None] = asyncio.Queue()

    async def next_chunk(self, idle_seconds: float) -> StreamChunk | None:
        """The next chunk; an ``error`` chunk when nothing came for ``idle_seconds`` or the feed failed."""
        try:
            # wait_for costs a task: only pay for it when there is nothing to take yet.
            # (asyncio.timeout() here would not fire inside an outer wait_for on Python 3.11.)
            item = (
                self.queue.get_nowait()
                if not self.queue.empty()
                else await asyncio.wait_for(self.queue.get(), idle_seconds)
            )
        except TimeoutError:
            message = f"no new entries for {idle_seconds:g} s: the producer may have stopped"
            return StreamChunk(entry_id="", kind="error", error=message)
        if isinstance(item, BaseException):
            return StreamChunk(entry_id="", kind="error", error=f"Valkey is unavailable: {item}")
        return item

    def deliver(self, entries: list[tuple[tuple[int, int], str, StreamChunk | None]]) -> None:
        for order, entry_id, chunk in entries:
            if order > self.order:
                self.queue.put_nowait(chunk)
                self.position, self.order = entry_id, order


class LiveFeed:
    """Follows every stream that has live readers over one connection and fans entries out.

    Standalone: one blocking multi-key ``XREAD`` on a client of its own (a blocking read stalls
    every other command on its client, so writes never share it). When a reader joins, the
    pending read is cut short with ``CLIENT UNBLOCK`` so the new key is read at once.

    Cluster: a multi-key ``XREAD`` must stay within one hash slot, so the feed polls instead: one
    pipelined, non-blocking ``XREAD`` per followed stream on its own cluster client, every
    ``poll_interval`` while idle.

    Args:
        connect: Creates the feed's client (called lazily, again after a failure).
        parse: Turns an entry into a chunk (``None`` when malformed); called once per entry.
        unblock: Sends ``CLIENT UNBLOCK <id>`` over another connection.
        block_ms: How long one blocking read waits.
        cluster: Whether the server is a cluster.
        give_up_seconds: How long reads may keep failing before the readers get an error.
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
        batch_count: int = 512,
    ) -> None:
        self._connect = connect
        self._parse = parse
        self._unblock = unblock
        self._block_ms = block_ms
        self._cluster = cluster
        self._give_up_seconds = give_up_seconds
        self._poll_interval = poll_interval
        self._batch_count = batch_count
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._client: GlideAnyClient | None = None
        self._client_id: int | None = None
        self._blocked = False
        self._round = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def followed_streams(self) -> int:
        """How many streams the feed follows now."""
        return len(self._subscriptions)

    def subscribe(self, key: str, position: str) -> Subscription:
        """Follow ``key`` for a reader that has already read up to ``position``."""
        subscription = Subscription(key, position)
        is_new_key = key not in self._subscriptions
        self._subscriptions.setdefault(key, set()).add(subscription)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow(), name="valkey-live-feed")
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
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
            if self._cluster and not found:
                await asyncio.sleep(self._poll_interval)

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
            for subscription in list(self._subscriptions.get(key, ())):
                subscription.deliver(decoded)
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

    def _fail_everyone(self, error: BaseException) -> None:
        for readers in self._subscriptions.values():
            for subscription in readers:
                subscription.queue.put_nowait(error)
        self._subscriptions.clear()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
