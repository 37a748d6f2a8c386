"""One reader of one stream: catch-up, live entries, exactly once, and the followed turn's end.

Exactly once: a write that timed out may have been applied and is then retried, so an entry can be
in the stream twice. Every entry carries its turn (``correlation_id``), the run of the turn that
wrote it (``run``) and its place in that run (``sequence``); a reader drops an entry whose sequence
it has already passed. A reader that resumes from a cursor learns the sequences it has passed from
the entries just before the cursor. A turn run again (after its worker died) starts a new run: the
reader resets what it has shown of the turn and shows the new run from its start.

The end of a followed turn is never waited for in vain: when the stream goes quiet (or holds
nothing of the turn at all), the reader asks the committed outcome, and a committed turn ends at
once with the committed text.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from ._chunk import ChunkKind, StreamChunk
from ._errors import ValkeyUnavailableError
from ._ids import entry_order
from ._live_feed import LiveFeed
from ._telemetry import ReaderTelemetry
from ._turn_outcome import CommittedTurnLookup

logger = logging.getLogger("valkey_buffer")

# How long a reader waits before it reads Valkey again after a failed catch-up.
_CATCH_UP_RETRY_SECONDS = 0.5

RangeReader = Callable[[str], AsyncIterator[tuple[str, StreamChunk | None]]]
# The entries just before a cursor, newest first (see StreamReads.look_back).
BackReader = Callable[[str], Awaitable[list[tuple[str, StreamChunk | None]]]]


@dataclass
class _TurnProgress:
    """How far a reader is in one turn: the run it shows, the last sequence passed in it, runs left."""

    run: str | None
    sequence: int
    earlier_runs: set[str | None] = field(default_factory=set)


class SequenceFilter:
    """Drops entries a reader has already passed, by ``(correlation_id, run, sequence)``.

    An entry of a new run of a turn the reader has passed entries of (the durable runtime ran the
    turn again) comes with a reset before it: a ``replace`` with no text, so that the reader shows
    the new run alone. Entries of a run the turn has left (a late write of the dead run) are dropped.
    """

    def __init__(self) -> None:
        self._turns: dict[str, _TurnProgress] = {}

    def learn(self, chunk: StreamChunk) -> None:
        """Record that the reader has passed ``chunk`` (read before its cursor, newest first)."""
        turn, sequence = chunk.correlation_id, chunk.sequence
        if turn is None or sequence is None:
            return
        progress = self._turns.get(turn)
        if progress is None:
            self._turns[turn] = _TurnProgress(chunk.run, sequence)
        elif chunk.run == progress.run:
            progress.sequence = max(progress.sequence, sequence)
        else:
            progress.earlier_runs.add(chunk.run)  # older than the run learned first

    def admit(self, chunk: StreamChunk) -> list[StreamChunk]:
        """What the reader shows for ``chunk``: nothing (passed), the chunk, or a reset and the chunk."""
        turn, sequence = chunk.correlation_id, chunk.sequence
        if turn is None or sequence is None:
            return [chunk]  # written by a writer that records no sequence (e.g. the reference samples)
        progress = self._turns.get(turn)
        if progress is None:
            self._turns[turn] = _TurnProgress(chunk.run, sequence)
            return [chunk]
        if chunk.run == progress.run:
            if sequence <= progress.sequence:
                return []
            progress.sequence = sequence
            return [chunk]
        if chunk.run in progress.earlier_runs:
            return []
        progress.earlier_runs.add(progress.run)
        progress.run, progress.sequence = chunk.run, sequence
        reset = StreamChunk(entry_id="", kind="replace", correlation_id=turn, agent=chunk.agent)
        return [reset, chunk]


class StreamReader:
    """Reads one stream from a cursor, then live, and yields each entry of the followed turn once.

    Args:
        key: The stream key.
        position: The id of the last entry the reader has (``0-0`` for the start).
        correlation_id: The turn to follow; without one, the first turn met after the cursor.
        feed: The live feed of this event loop.
        read_after: Yields the stream's entries after an id (raises ``ValkeyUnavailableError``).
        read_back: Returns the entries just before an id (the look-back), newest first.
        idle_timeout: Seconds without any entry before the reader gives up with an error.
        reconcile_after: Seconds without an entry of the followed turn before the outcome is asked.
        committed_turn: Asks the committed outcome; without it, the reader never reconciles.
        telemetry: The reader's span and the read metrics.
    """

    def __init__(
        self,
        *,
        key: str,
        position: str,
        correlation_id: str | None,
        feed: LiveFeed,
        read_after: RangeReader,
        read_back: BackReader,
        idle_timeout: float,
        reconcile_after: float,
        committed_turn: CommittedTurnLookup | None,
        telemetry: ReaderTelemetry,
    ) -> None:
        self._key = key
        self._position = position
        self._order = entry_order(position)
        self._fixed_turn = correlation_id
        self._turn = correlation_id
        self._agent: str | None = None
        self._turn_seen = False
        self._feed = feed
        self._read_after = read_after
        self._read_back = read_back
        self._idle_timeout = idle_timeout
        self._reconcile_after = reconcile_after
        self._committed_turn = committed_turn
        self._sequences = SequenceFilter()
        self._telemetry = telemetry
        now = time.monotonic()
        self._idle_deadline = now + idle_timeout
        self._reconcile_at = now + reconcile_after

    async def chunks(self) -> AsyncGenerator[StreamChunk, None]:
        """Yield the followed turn's chunks in order, each once, ending after its terminal chunk.

        Raises:
            ValkeyUnavailableError: If Valkey cannot be reached before the first entry.
        """
        telemetry = self._telemetry
        # The feed's tasks start inside these calls and serve every reader of the loop: they start in
        # an empty context, not in this reader's (whose trace their logs would otherwise carry).
        subscription = contextvars.Context().run(self._feed.subscribe, self._key)
        end = "closed"  # the consumer stopped reading first, unless the reader ends by itself
        telemetry.started()
        if self._turn is not None:
            telemetry.turn_known(self._turn)
        try:
            if self._position != "0-0":
                last = await self._learn_before_cursor()
                if last is not None:
                    if telemetry.resumed:
                        telemetry.replayed(1)
                    end = last.kind
                    yield last  # the cursor is at or after the turn's end: it ends at once
                    return
            first_catch_up = True
            while True:
                if subscription.needs_catch_up:
                    subscription.needs_catch_up = False
                    try:
                        async for entry_id, chunk in self._read_after(self._position):
                            order = entry_order(entry_id)
                            accepted = self._accept(order, entry_id, chunk)
                            if accepted:
                                # A resume's catch-up replays what the reader missed; otherwise
                                # the catch-up delivers entries written a moment ago.
                                if telemetry.resumed:
                                    telemetry.replayed(1)
                                else:
                                    telemetry.delivered(order[0])
                            for shown in accepted:
                                if shown.is_terminal:
                                    end = shown.kind
                                yield shown
                                if shown.is_terminal:
                                    return
                    except ValkeyUnavailableError:
                        if first_catch_up:
                            end = "unavailable"
                            raise
                        # An outage: read again later; the timers below still run.
                        subscription.needs_catch_up = True
                        await asyncio.sleep(_CATCH_UP_RETRY_SECONDS)
                        continue
                    contextvars.Context().run(self._feed.follow_from, self._key, self._position)
                    if first_catch_up and not self._turn_seen and self._turn is not None:
                        # Nothing of the turn after the cursor (nor just before it): it has not
                        # written yet, or its entries are gone. Ask now rather than after a pause.
                        self._reconcile_at = 0.0
                    first_catch_up = False
                    continue
                if subscription.entries:
                    order, entry_id, chunk = subscription.entries.popleft()
                    accepted = self._accept(order, entry_id, chunk)
                    if accepted:
                        telemetry.delivered(order[0])
                    for shown in accepted:
                        if shown.is_terminal:
                            end = shown.kind
                        yield shown
                        if shown.is_terminal:
                            return
                    continue
                now = time.monotonic()
                if self._committed_turn is not None and self._turn is not None and now >= self._reconcile_at:
                    ending = await self._reconcile()
                    if ending:
                        telemetry.reconciled()
                        end = "reconciled"
                        for chunk in ending:
                            yield chunk
                        return
                    continue
                if now >= self._idle_deadline:
                    message = f"no new entries for {self._idle_timeout:g} s: the producer may have stopped"
                    end = "idle"
                    yield StreamChunk(entry_id="", kind="error", error=message, correlation_id=self._turn)
                    return
                wake_at = self._idle_deadline
                if self._committed_turn is not None and self._turn is not None:
                    wake_at = min(wake_at, self._reconcile_at)
                subscription.wake_at = wake_at
                await subscription.wait()
        finally:
            self._feed.unsubscribe(subscription)
            telemetry.ended(end)

    async def _learn_before_cursor(self) -> StreamChunk | None:
        """Learn the sequences passed before the cursor; the followed turn's end if it is among them."""
        end: StreamChunk | None = None
        for _, chunk in await self._read_back(self._position):
            if chunk is None:
                continue
            self._sequences.learn(chunk)
            if self._fixed_turn is not None and chunk.correlation_id == self._fixed_turn:
                self._agent = self._agent or chunk.agent
                self._telemetry.agent_known(self._agent)
                self._turn_seen = True
                if chunk.is_terminal and end is None:
                    end = chunk
        return end

    def _accept(self, order: tuple[int, int], entry_id: str, chunk: StreamChunk | None) -> list[StreamChunk]:
        """Move past one entry; what the reader should yield for it (see :class:`SequenceFilter`)."""
        if order <= self._order:
            return []  # delivered by the feed, but already read in a catch-up
        self._position, self._order = entry_id, order
        now = time.monotonic()
        self._idle_deadline = now + self._idle_timeout
        if chunk is None:
            return []
        shown = self._sequences.admit(chunk)
        if not shown:
            return []
        if self._turn is None:
            self._turn = chunk.correlation_id  # a reader without a turn follows the first it meets
            if self._turn is not None:
                self._telemetry.turn_known(self._turn)
        elif chunk.correlation_id != self._turn:
            return []
        self._turn_seen = True
        self._agent = chunk.agent or self._agent
        self._telemetry.agent_known(self._agent)
        self._reconcile_at = now + self._reconcile_after
        return shown

    async def _reconcile(self) -> list[StreamChunk]:
        """Ask the committed outcome; the chunks that end the turn if it has committed."""
        assert self._committed_turn is not None and self._turn is not None
        self._reconcile_at = time.monotonic() + self._reconcile_after
        try:
            outcome = await self._committed_turn(self._turn, self._agent)
        except Exception:
            logger.warning("Could not read the committed outcome of turn %s", self._turn, exc_info=True)
            return []
        if outcome is None or not outcome.is_committed:
            return []
        if outcome.status == "failed":
            return [StreamChunk(entry_id="", kind="error", error=outcome.error or "error", correlation_id=self._turn)]
        end: ChunkKind = "cancelled" if outcome.status == "cancelled" else "done"
        return [
            StreamChunk(
                entry_id="", kind="replace", text=outcome.text or "", correlation_id=self._turn, agent=self._agent
            ),
            StreamChunk(entry_id="", kind=end, correlation_id=self._turn, agent=self._agent),
        ]
