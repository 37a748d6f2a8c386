"""One process-wide live feed per event loop: a dedicated read connection fanned out in memory.

The hand-off from a reader's catch-up to the live feed is gap-free by construction: a reader
subscribes *first*, then reads Valkey from its own cursor, then takes the feed's entries, dropping
those at or below the last id it has. Whatever the feed delivered while the reader caught up is
either in the catch-up or in the reader's queue. The same path serves a reader that fell behind:
its queue is bounded, and when it overflows the queue is emptied and the reader catches up from
Valkey again, so a slow client costs Valkey reads, never host memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from glide import ClosingError, ClusterBatch, StreamReadOptions

from ._chunk import StreamChunk
from ._connection import GlideAnyClient
from ._ids import entry_order

logger = logging.getLogger("valkey_buffer")

# One delivered entry: (its id as numbers, its id, its chunk or None when malformed).
Delivery = tuple[tuple[int, int], str, StreamChunk | None]


class Subscription:
    """One reader's place in the live feed.

    The feed appends every entry it reads for ``key`` to ``entries``; the reader pops them. When
    more than ``max_queued`` are waiting, they are dropped and ``needs_catch_up`` is set: the
    reader reads Valkey from its own position instead. ``wake_at`` is when the reader wants to be
    woken without an entry (its idle and reconcile timers); the feed's sweep does that.
    """

    def __init__(self, key: str, max_queued: int) -> None:
        self.key = key
        self.entries: deque[Delivery] = deque()
        self.needs_catch_up = True
        self.wake_at = float("inf")
        self._max_queued = max_queued
        self._event = asyncio.Event()

    def deliver(self, entries: list[Delivery]) -> bool:
        """Queue entries for the reader; ``False`` when it was too far behind and must catch up instead."""
        self._event.set()
        if len(self.entries) + len(entries) > self._max_queued:
            # The reader is behind: Valkey holds these entries, it reads them from there.
            self.entries.clear()
            self.needs_catch_up = True
            return False
        self.entries.extend(entries)
        return True

    def wake(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Wait until an entry arrives, a catch-up is due, or ``wake_at`` has passed."""
        if not self.entries and not self.needs_catch_up:
            await self._event.wait()
        self._event.clear()


class LiveFeed:
    """Follows every stream that has live readers over one connection and fans entries out.

    The feed keeps one position per followed stream: the id of the last entry it read. A stream is
    followed from the moment its first reader has caught up (:meth:`follow_from`) until its last
    reader leaves; the position only moves forward, so no entry is read twice by the feed.

    Standalone: one blocking multi-key ``XREAD`` on a client of its own (a blocking read stalls
    every other command on its client, so writes never share it). When a stream starts being
    followed, the pending read is cut short with ``CLIENT UNBLOCK`` so the new stream is read at
    once, whatever the feed was doing.

    Cluster: a multi-key ``XREAD`` must stay within one hash slot, so this feed polls instead: one
    pipelined, non-blocking ``XREAD`` per followed stream on its own cluster client, repeated at
    once while entries flow and, while all is quiet, after a pause that doubles from
    ``poll_interval`` up to ``max_poll_interval``. It costs Valkey commands while readers wait:
    by default a cluster uses :class:`NotifiedFeed`, which falls back to this when the server
    refuses pub/sub.

    While reads fail (an outage), the feed keeps trying: readers keep their own timers, and the
    feed resumes from its positions when Valkey is back, so nothing written after is missed. In a
    cluster, the streams of a node that does not answer are retried while the others are read.

    Args:
        connect: Creates the feed's client (called lazily, again after a failure).
        parse: Turns an entry into a chunk (``None`` when malformed); called once per entry.
        unblock: Sends ``CLIENT UNBLOCK <id>`` over another connection.
        block_ms: How long one blocking read waits.
        cluster: Whether the server is a cluster.
        poll_interval: Cluster only: the first pause after a poll that found nothing.
        max_poll_interval: Cluster only: the longest pause between polls.
        batch_count: Entries read per stream and round at most.
        max_queued: Entries a reader may have waiting before it is sent back to Valkey.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[GlideAnyClient]],
        parse: Callable[[str, Any], StreamChunk | None],
        unblock: Callable[[int], Awaitable[bool]],
        *,
        block_ms: int,
        cluster: bool,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.05,
        batch_count: int = 512,
        max_queued: int = 1024,
    ) -> None:
        self._connect = connect
        self._parse = parse
        self._unblock = unblock
        self._block_ms = block_ms
        self._cluster = cluster
        self._poll_interval = poll_interval
        self._max_poll_interval = max_poll_interval
        self._batch_count = batch_count
        self._max_queued = max_queued
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._positions: dict[str, str] = {}  # followed stream -> id of the last entry the feed read
        self._followed = asyncio.Event()  # set when a stream starts being followed
        self._client: GlideAnyClient | None = None
        self._client_id: int | None = None
        self._reading: int | None = None  # the round whose blocking read is pending, if any
        self._round = 0
        self._idle_polls = 0  # polls in a row that found nothing (cluster)
        self._unreadable = False  # some followed streams could not be read in the last round (cluster)
        self.overflows = 0  # times a reader fell so far behind that it was sent back to Valkey
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def reader_count(self) -> int:
        """Readers subscribed now."""
        return sum(len(readers) for readers in self._subscriptions.values())

    @property
    def queued_entries(self) -> int:
        """Entries waiting in readers' queues now (each queue holds at most ``max_queued``)."""
        return sum(len(s.entries) for readers in self._subscriptions.values() for s in readers)

    def subscribe(self, key: str) -> Subscription:
        """Start delivering ``key``'s entries to a new reader, which must catch up first (see the module)."""
        subscription = Subscription(key, self._max_queued)
        self._subscriptions.setdefault(key, set()).add(subscription)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._wake_readers(), name="valkey-live-feed-timers")
        return subscription

    def follow_from(self, key: str, position: str) -> None:
        """Follow ``key`` after ``position`` unless it is followed already (a reader caught up to there).

        A stream already followed keeps its position: it is at or after what any subscribed reader
        still needs from the feed (see the module docstring).
        """
        if key in self._positions or key not in self._subscriptions:
            return
        self._positions[key] = position
        self._followed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow(), name="valkey-live-feed")
        self._stream_followed(key)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to a reader; a stream without readers is no longer followed."""
        readers = self._subscriptions.get(subscription.key)
        if readers is None:
            return
        readers.discard(subscription)
        if not readers:
            del self._subscriptions[subscription.key]
            if self._positions.pop(subscription.key, None) is not None:
                self._stream_unfollowed(subscription.key)
            self._followed.set()  # lets an idle feed notice that it has nothing left to do

    async def aclose(self) -> None:
        """Stop following and close the feed's client."""
        for task in (self._task, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    def _stream_followed(self, key: str) -> None:
        # The pending blocking read does not cover the new stream: cut it short so the next one does.
        if self._reading is not None:
            asyncio.get_running_loop().create_task(self._cut_short(self._reading))

    def _stream_unfollowed(self, key: str) -> None:
        """Called when ``key`` loses its last reader (a hook for feeds that subscribe per stream)."""

    async def _cut_short(self, read_round: int) -> None:
        # CLIENT UNBLOCK travels on another connection and may overtake the XREAD it is meant to
        # cut short (it then answers 0): try again until that read has started or has ended.
        deadline = time.monotonic() + self._block_ms / 1000
        while self._reading == read_round and time.monotonic() < deadline:
            client_id = self._client_id
            if client_id is not None:
                with contextlib.suppress(Exception):
                    if await self._unblock(client_id):
                        return
            await asyncio.sleep(0.002)

    async def _follow(self) -> None:
        failing_since: float | None = None
        while self._subscriptions:
            if not self._positions:
                # Readers are still catching up: nothing to read until one of them is done.
                self._followed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._followed.wait(), timeout=1.0)
                continue
            try:
                if self._client is None:
                    self._client = await self._connect()
                if self._client_id is None and not self._cluster:
                    self._client_id = int(await self._client.custom_command(["CLIENT", "ID"]))
                await self._next_round(self._client)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # A reconnected client has a new id; a closed one must be replaced.
                self._client_id = None
                if isinstance(error, ClosingError):
                    self._client = None
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    logger.warning("Live feed reads fail, retrying until Valkey answers: %s", error)
                await asyncio.sleep(min(1.0, 0.1 + (now - failing_since) / 10))
                continue
            if failing_since is not None:
                logger.info("Live feed reads succeed again after %.1f s", time.monotonic() - failing_since)
                failing_since = None

    async def _next_round(self, client: GlideAnyClient) -> None:
        """Read every followed stream once and deliver what was found, pausing as the mode requires."""
        found = await self._read_round(client)
        if self._cluster:
            # Poll fast while entries flow; back off (up to max_poll_interval) while all is quiet.
            self._idle_polls = 0 if found else self._idle_polls + 1
            if self._idle_polls:
                await asyncio.sleep(self._poll_pause())

    def _poll_pause(self) -> float:
        return float(min(self._poll_interval * 2 ** (self._idle_polls - 1), self._max_poll_interval))

    async def _read_round(self, client: GlideAnyClient) -> bool:
        positions = dict(self._positions)
        if self._cluster:
            results, unreadable = await self._poll(client, positions)
            self._note_unreadable(unreadable)  # read again next round, like every stream
        else:
            options = StreamReadOptions(block_ms=self._block_ms, count=self._batch_count)
            self._round += 1
            self._reading = self._round
            try:
                reply = await client.xread(positions, options)
            finally:
                self._reading = None
            results = dict(reply or {})
        return self._deliver(results)

    def _deliver(self, results: Mapping[Any, Any]) -> bool:
        """Fan a read's entries out to the readers of their streams; whether there were any."""
        for raw_key, entries in results.items():
            key = _text(raw_key)
            if key not in self._positions:
                continue  # its last reader left while the read was pending
            delivered: list[Delivery] = []
            for raw_id, fields in entries.items():
                entry_id = _text(raw_id)
                delivered.append((entry_order(entry_id), entry_id, self._parse(entry_id, fields)))
            if not delivered:
                continue
            if delivered[-1][0] > entry_order(self._positions[key]):
                self._positions[key] = delivered[-1][1]
            for subscription in list(self._subscriptions.get(key, ())):
                if not subscription.deliver(delivered):
                    self.overflows += 1
        return bool(results)

    async def _poll(self, client: Any, positions: dict[str, str]) -> tuple[dict[Any, Any], set[str]]:
        """Read each stream after its position in one pipeline: the entries, and the streams that failed.

        A stream whose node does not answer (a failover) fails alone: the others are read. Raises
        when no stream could be read.
        """
        batch = ClusterBatch(is_atomic=False)
        for key, position in positions.items():
            batch.xread({key: position}, StreamReadOptions(count=self._batch_count))
        replies = await client.exec(batch, raise_on_error=False) or []
        results: dict[Any, Any] = {}
        errors: dict[str, Exception] = {}
        for key, reply in zip(positions, replies, strict=True):
            if isinstance(reply, Exception):
                errors[key] = reply
            else:
                results.update(reply or {})
        if errors and len(errors) == len(positions):
            raise next(iter(errors.values()))
        return results, set(errors)

    def _note_unreadable(self, keys: set[str]) -> None:
        # Logged when some streams start failing and when all are read again, not on every round.
        if keys and not self._unreadable:
            logger.warning("Live feed reads of %d streams fail (a node is down?), retrying", len(keys))
        elif self._unreadable and not keys:
            logger.info("Live feed reads every followed stream again")
        self._unreadable = bool(keys)

    async def _wake_readers(self) -> None:
        # One timer for all readers instead of one per waiting reader: each reader says when it
        # wants to be woken (wake_at); checked every 50 ms, which bounds how late a timer fires.
        while self._subscriptions:
            now = time.monotonic()
            for readers in list(self._subscriptions.values()):
                for subscription in readers:
                    if now >= subscription.wake_at:
                        subscription.wake_at = float("inf")
                        subscription.wake()
            await asyncio.sleep(0.05)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
