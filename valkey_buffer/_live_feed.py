"""One process-wide live feed per event loop: a dedicated read connection fanned out in memory.

The hand-off from a reader's catch-up to the live feed is gap-free by construction: a reader
subscribes *first*, then reads Valkey from its own cursor, then takes the feed's entries, dropping
those at or below the last id it has. Whatever the feed delivered while the reader caught up is
either in the catch-up or in the reader's queue. The same path serves a reader that fell behind:
its queue is bounded, and when it overflows the queue is emptied and the reader catches up from
Valkey again, so a slow client costs Valkey reads, never host memory.

How the feed learns that a followed stream has new entries is a :class:`WakeUp` strategy (see
``_wake_ups`` and ``_notifications``): the feed owns the readers, the positions and the delivery;
the strategy owns the reads and the waits between them, and may hand over to another strategy
(:meth:`LiveFeed.fall_back`) when the server refuses what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from glide import ClosingError

from ._chunk import StreamChunk
from ._connection import GlideAnyClient
from ._glide import text
from ._ids import entry_order

logger = logging.getLogger("valkey_buffer")

# One delivered entry: (its id as numbers, its id, its chunk or None when malformed).
Delivery = tuple[tuple[int, int], str, StreamChunk | None]


@dataclass(frozen=True)
class ReaderStats:
    """The live readers of one event loop (see ``ValkeyStreamBuffer.reader_stats``).

    Attributes:
        active: Readers following a stream now.
        queued_entries: Entries delivered to them and not read yet (bounded per reader).
        overflows: Times a reader fell so far behind that it was sent back to read Valkey.
        live_feed: How the live feed learns of new entries now: ``notifications``, ``polling``
            (in a cluster, by choice or because the server refused pub/sub) or ``blocking``.
    """

    active: int
    queued_entries: int
    overflows: int
    live_feed: str = "blocking"


class WakeUp(Protocol):
    """How a live feed learns of new entries: reads the followed streams and waits between reads.

    Attributes:
        name: What ``ReaderStats.live_feed`` reports: ``blocking``, ``polling`` or ``notifications``.
    """

    name: str

    async def next_round(self, client: GlideAnyClient) -> None:
        """Read the followed streams that may have news (``LiveFeed.deliver``), then wait as needed."""

    def followed(self, key: str) -> None:
        """``key`` starts being followed: make sure the next reads cover it soon."""

    def unfollowed(self, key: str) -> None:
        """``key`` lost its last reader."""

    def failed(self) -> None:
        """A round raised: the feed's client may have reconnected or been replaced."""

    async def aclose(self) -> None:
        """Stop what the strategy runs in the background."""


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
        # A bare future rather than an asyncio.Event: set and waited for once per entry per reader.
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None

    def deliver(self, entries: list[Delivery]) -> bool:
        """Queue entries for the reader; ``False`` when it was too far behind and must catch up instead."""
        self.wake()
        if len(self.entries) + len(entries) > self._max_queued:
            # The reader is behind: Valkey holds these entries, it reads them from there.
            self.entries.clear()
            self.needs_catch_up = True
            return False
        self.entries.extend(entries)
        return True

    def wake(self) -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Wait until an entry arrives, a catch-up is due, or ``wake_at`` has passed."""
        if not self.entries and not self.needs_catch_up and not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._woken = False


class LiveFeed:
    """Follows every stream that has live readers over one connection and fans entries out.

    The feed keeps one position per followed stream: the id of the last entry it read. A stream is
    followed from the moment its first reader has caught up (:meth:`follow_from`) until its last
    reader leaves; the position only moves forward, so no entry is read twice by the feed.

    While reads fail (an outage), the feed keeps trying: readers keep their own timers, and the
    feed resumes from its positions when Valkey is back, so nothing written after is missed.

    Args:
        connect: Creates the feed's client (called lazily, again after a failure).
        parse: Turns an entry into a chunk (``None`` when malformed); called once per entry.
        wake_up: Makes the feed's strategy, given the feed.
        fallback: Makes the strategy :meth:`fall_back` switches to.
        max_queued: Entries a reader may have waiting before it is sent back to Valkey.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[GlideAnyClient]],
        parse: Callable[[str, Any], StreamChunk | None],
        wake_up: Callable[[LiveFeed], WakeUp],
        *,
        fallback: Callable[[LiveFeed], WakeUp] | None = None,
        max_queued: int = 1024,
    ) -> None:
        self._connect = connect
        self._parse = parse
        self._fallback = fallback
        self._max_queued = max_queued
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._positions: dict[str, str] = {}  # followed stream -> id of the last entry the feed read
        self._followed = asyncio.Event()  # set when a stream starts being followed
        self._client: GlideAnyClient | None = None
        self._unreadable = False  # some followed streams could not be read in the last round
        self.overflows = 0  # times a reader fell so far behind that it was sent back to Valkey
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._wake_up = wake_up(self)

    def stats(self) -> ReaderStats:
        """The feed's readers now, and how it learns of new entries (its strategy's name)."""
        return ReaderStats(
            active=self.reader_count,
            queued_entries=self.queued_entries,
            overflows=self.overflows,
            live_feed=self._wake_up.name,
        )

    @property
    def positions(self) -> Mapping[str, str]:
        """The followed streams and the id of the last entry the feed read of each (read-only)."""
        return MappingProxyType(self._positions)

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
        self._wake_up.followed(key)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to a reader; a stream without readers is no longer followed."""
        readers = self._subscriptions.get(subscription.key)
        if readers is None:
            return
        readers.discard(subscription)
        if not readers:
            del self._subscriptions[subscription.key]
            if self._positions.pop(subscription.key, None) is not None:
                self._wake_up.unfollowed(subscription.key)
            self._followed.set()  # lets an idle feed notice that it has nothing left to do

    def deliver(self, results: Mapping[Any, Any]) -> bool:
        """Fan a read's entries (``{key: {id: fields}}``) out to their streams' readers; whether there were any."""
        for raw_key, entries in results.items():
            key = text(raw_key)
            if key not in self._positions:
                continue  # its last reader left while the read was pending
            delivered: list[Delivery] = []
            for raw_id, fields in entries.items():
                entry_id = text(raw_id)
                delivered.append((entry_order(entry_id), entry_id, self._parse(entry_id, fields)))
            if not delivered:
                continue
            if delivered[-1][0] > entry_order(self._positions[key]):
                self._positions[key] = delivered[-1][1]
            for subscription in list(self._subscriptions.get(key, ())):
                if not subscription.deliver(delivered):
                    self.overflows += 1
        return bool(results)

    def note_unreadable(self, keys: set[str]) -> None:
        """Record which followed streams a round could not read (their node does not answer)."""
        # Logged when some streams start failing and when all are read again, not on every round.
        if keys and not self._unreadable:
            logger.warning("Live feed reads of %d streams fail (a node is down?), retrying", len(keys))
        elif self._unreadable and not keys:
            logger.info("Live feed reads every followed stream again")
        self._unreadable = bool(keys)

    async def fall_back(self, reason: str) -> None:
        """Switch to the fallback strategy (the server refuses what the current one needs)."""
        if self._fallback is None:
            raise RuntimeError(f"the {self._wake_up.name} live feed has no fallback: {reason}")
        previous, self._wake_up = self._wake_up, self._fallback(self)
        await previous.aclose()
        for key in self._positions:
            self._wake_up.followed(key)

    async def aclose(self) -> None:
        """Stop following and close the feed's client."""
        for task in (self._task, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self._wake_up.aclose()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

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
                await self._wake_up.next_round(self._client)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._wake_up.failed()
                if isinstance(error, ClosingError):
                    self._client = None  # a closed client must be replaced
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    logger.warning("Live feed reads fail, retrying until Valkey answers: %s", error)
                await asyncio.sleep(min(1.0, 0.1 + (now - failing_since) / 10))
                continue
            if failing_since is not None:
                logger.info("Live feed reads succeed again after %.1f s", time.monotonic() - failing_since)
                failing_since = None

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
