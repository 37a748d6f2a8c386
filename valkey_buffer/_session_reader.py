"""One reader of a whole session's stream: every turn's entries once, until an entry that ends it.

A turn reader (``StreamReader``) follows one turn and ends at its terminal entry. A session that
holds several turns at once, like a workflow instance whose agents stream side by side, is read
whole instead: every entry of every turn, each once (the same ``SequenceFilter``), in stream order,
until an entry the caller says ends the session (e.g. ``workflow_completed``).

The end of such a session is a fact outside the stream (the orchestration's committed status), so
when the stream goes quiet the reader asks the caller (``on_quiet``), which may append the missing
end as a session event: it then arrives like any other entry, with a real id. ``on_quiet`` answers
whether the producer is still alive; while it is, the reader does not give up (a workflow may wait
for a person for hours), otherwise it gives up with an ``error`` chunk after ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from ._chunk import StreamChunk
from ._errors import ValkeyUnavailableError
from ._ids import entry_order
from ._live_feed import LiveFeed
from ._stream_reader import BackReader, RangeReader, SequenceFilter

logger = logging.getLogger("valkey_buffer")

_CATCH_UP_RETRY_SECONDS = 0.5

SessionEnd = Callable[[StreamChunk], bool]
"""Whether an entry ends the session's stream (the reader yields it, then stops)."""

QuietHook = Callable[[], Awaitable[bool]]
"""Called when the stream has been quiet for a while; answers whether the producer is still alive."""


class SessionReader:
    """Reads a whole stream from a cursor, then live, yielding each entry once until one ends it.

    Args:
        key: The stream key.
        position: The id of the last entry the reader has (``0-0`` for the start).
        ends: Whether an entry ends the session.
        feed: The live feed of this event loop.
        read_after: Yields the stream's entries after an id.
        read_back: Returns the entries just before an id, newest first.
        idle_timeout: Seconds without any entry (and without a live producer) before giving up.
        quiet_seconds: Seconds without an entry before ``on_quiet`` is asked (then again as often).
        on_quiet: Looks at the producer; may append entries; answers whether it is still alive.
    """

    def __init__(
        self,
        *,
        key: str,
        position: str,
        ends: SessionEnd,
        feed: LiveFeed,
        read_after: RangeReader,
        read_back: BackReader,
        idle_timeout: float,
        quiet_seconds: float,
        on_quiet: QuietHook | None,
    ) -> None:
        self._key = key
        self._position = position
        self._order = entry_order(position)
        self._ends = ends
        self._feed = feed
        self._read_after = read_after
        self._read_back = read_back
        self._idle_timeout = idle_timeout
        self._quiet_seconds = quiet_seconds
        self._on_quiet = on_quiet
        self._sequences = SequenceFilter()
        now = time.monotonic()
        self._idle_deadline = now + idle_timeout
        self._quiet_at = now + quiet_seconds

    async def chunks(self) -> AsyncGenerator[StreamChunk, None]:
        """Yield the session's chunks in order, each once, ending after the one that ends the session.

        Raises:
            ValkeyUnavailableError: If Valkey cannot be reached before the first entry.
        """
        subscription = contextvars.Context().run(self._feed.subscribe, self._key)
        try:
            if self._position != "0-0":
                for _, before in await self._read_back(self._position):
                    if before is None:
                        continue
                    self._sequences.learn(before)
                    if self._ends(before):
                        yield before  # the cursor is at or after the end: it ends at once
                        return
            first_catch_up = True
            while True:
                if subscription.needs_catch_up:
                    subscription.needs_catch_up = False
                    try:
                        async for entry_id, chunk in self._read_after(self._position):
                            for shown in self._accept(entry_order(entry_id), entry_id, chunk):
                                yield shown
                                if self._ends(shown):
                                    return
                    except ValkeyUnavailableError:
                        if first_catch_up:
                            raise
                        subscription.needs_catch_up = True
                        await asyncio.sleep(_CATCH_UP_RETRY_SECONDS)
                        continue
                    contextvars.Context().run(self._feed.follow_from, self._key, self._position)
                    first_catch_up = False
                    continue
                if subscription.entries:
                    order, entry_id, chunk = subscription.entries.popleft()
                    for shown in self._accept(order, entry_id, chunk):
                        yield shown
                        if self._ends(shown):
                            return
                    continue
                now = time.monotonic()
                if self._on_quiet is not None and now >= self._quiet_at:
                    self._quiet_at = now + self._quiet_seconds
                    if await self._producer_alive():
                        self._idle_deadline = time.monotonic() + self._idle_timeout
                    continue
                if now >= self._idle_deadline:
                    message = f"no new entries for {self._idle_timeout:g} s: the producer may have stopped"
                    yield StreamChunk(entry_id="", kind="error", error=message)
                    return
                wake_at = self._idle_deadline
                if self._on_quiet is not None:
                    wake_at = min(wake_at, self._quiet_at)
                subscription.wake_at = wake_at
                await subscription.wait()
        finally:
            self._feed.unsubscribe(subscription)

    async def _producer_alive(self) -> bool:
        assert self._on_quiet is not None
        try:
            return await self._on_quiet()
        except Exception:
            logger.warning("Could not look at the producer of %s", self._key, exc_info=True)
            return False

    def _accept(self, order: tuple[int, int], entry_id: str, chunk: StreamChunk | None) -> list[StreamChunk]:
        if order <= self._order:
            return []  # delivered by the feed, but already read in a catch-up
        self._position, self._order = entry_id, order
        now = time.monotonic()
        self._idle_deadline = now + self._idle_timeout
        self._quiet_at = now + self._quiet_seconds
        if chunk is None:
            return []
        return self._sequences.admit(chunk)
