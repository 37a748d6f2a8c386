"""Group commit for one turn: an ordered, bounded queue of entries flushed in atomic batches.

The turn's end is decided when the writer reaches it, not when the agent reports it: only then is
it known whether every chunk before it reached Valkey. If any write of the turn failed (dropped, or
timed out so that it may or may not have been applied), the end carries the committed text in a
``replace`` entry, so that every reader ends with what was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ._telemetry import TurnTelemetry

logger = logging.getLogger("valkey_buffer")

Fields = list[tuple[str, str]]
# Writes one batch of a turn's entries (stream key, correlation id, entries in order) and refreshes
# the stream's TTL, atomically.
BatchWriter = Callable[[str, str, Sequence[Fields]], Awaitable[None]]


@dataclass
class WriteStats:
    """Counters of the write path, for logs, health output and tests."""

    entries_written: int = 0
    batches_written: int = 0
    batch_failures: int = 0
    entries_dropped: int = 0
    turns_replaced: int = 0


@dataclass(frozen=True)
class _TurnEnd:
    """The end of a turn, queued behind its chunks: ``done`` (with the final text), or ``error``."""

    final_text: str | None
    error: str | None
    cancelled: bool


class TurnWriter:
    """Queues one turn's entries and writes them in order, many per round trip.

    The agent's callback only waits when the queue is full (backpressure). While Valkey is
    unreachable, a batch of chunks is retried for ``retry_seconds`` and then dropped and counted,
    and the queue stops applying backpressure until a write succeeds again, so an outage never
    stalls or fails the agent. The turn's end is never dropped: it is retried in the background
    for as long as the stream would live (``end_retry_seconds``).

    Args:
        key: The stream key.
        correlation_id: The turn, recorded in every entry.
        agent: The agent's name, recorded in every entry when given.
        write_batch: Writes a batch atomically.
        stats: Counters shared by the buffer's writers.
        telemetry: The turn's span and the write metrics.
        max_pending: Entries queued before :meth:`add` waits.
        max_batch: Entries written per round trip at most.
        retry_seconds: How long a batch of chunks is retried before it is dropped.
        end_retry_seconds: How long the turn's end is retried.
    """

    def __init__(
        self,
        key: str,
        correlation_id: str,
        agent: str | None,
        write_batch: BatchWriter,
        stats: WriteStats,
        telemetry: TurnTelemetry,
        *,
        max_pending: int,
        max_batch: int,
        retry_seconds: float,
        end_retry_seconds: float,
    ) -> None:
        self.key = key
        self.correlation_id = correlation_id
        self.agent = agent
        self.loop = asyncio.get_running_loop()
        self.last_activity = time.monotonic()
        self._write_batch = write_batch
        self._stats = stats
        self.telemetry = telemetry
        self._task_context: contextvars.Context | None = telemetry.task_context()
        self._pending: deque[Fields | _TurnEnd] = deque()
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._retry_seconds = retry_seconds
        self._end_retry_seconds = end_retry_seconds
        # Sequences start at 0 in every run of the turn; the run id tells readers a re-run from a
        # repeated write (see SequenceFilter).
        self.run = secrets.token_hex(4)
        self._next_sequence = 0
        self._queued_text: list[str] = []  # every chunk's text, in order: what the stream should add up to
        self._uncertain = False  # a write of this turn failed: the stream may lack (or repeat) entries
        self._healthy = True
        self._ended = False
        self._space = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def is_idle(self) -> bool:
        """Whether nothing is queued or being written."""
        return not self._pending and (self._flusher is None or self._flusher.done())

    @property
    def flusher(self) -> asyncio.Task[None] | None:
        """The task writing the queue, while there is one."""
        return self._flusher

    async def add(self, text: str) -> None:
        """Queue a text chunk; waits only while the queue is full and Valkey is healthy."""
        if self._ended:
            raise RuntimeError(f"turn {self.correlation_id} has ended: no chunk may follow its end")
        self.last_activity = time.monotonic()
        while len(self._pending) >= self._max_pending and self._healthy:
            self._space.clear()
            await self._space.wait()
        if len(self._pending) >= self._max_pending and isinstance(self._pending[0], list):
            self._pending.popleft()
            self._uncertain = True
            self._stats.entries_dropped += 1
            self.telemetry.dropped(1)
        self._queued_text.append(text)
        self._pending.append(self._entry([("text", text)]))
        self._start_flushing()

    def end(self, *, final_text: str | None = None, error: str | None = None, cancelled: bool = False) -> None:
        """Queue the turn's end behind its chunks: ``done``, or ``error`` when ``error`` is given.

        With ``final_text`` (the committed answer), the writer appends what the chunks lack of it,
        or a ``replace`` entry carrying all of it when the chunks are not its prefix or a write of
        the turn failed. ``cancelled`` marks the ``done`` of a stopped turn (``cancelled="true"``).
        A second end is ignored.
        """
        if self._ended:
            return
        self._ended = True
        self.last_activity = time.monotonic()
        self._pending.append(_TurnEnd(final_text=final_text, error=error, cancelled=cancelled))
        self._start_flushing()

    async def drain(self) -> None:
        """Wait until every queued entry has been written (or given up on)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    def _start_flushing(self) -> None:
        if self._flusher is None or self._flusher.done():
            # The task runs with the turn's span current: what it logs carries the turn's trace.
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_all(), name=f"flush {self.key}", context=self._task_context
            )

    def _entry(self, fields: Fields) -> Fields:
        entry: Fields = [
            fields[0],
            ("sequence", str(self._next_sequence)),
            ("timestamp", str(int(time.time() * 1000))),
            *fields[1:],
            ("correlation_id", self.correlation_id),
            ("run", self.run),
        ]
        if self.agent:
            entry.append(("agent", self.agent))
        self._next_sequence += 1
        return entry

    async def _flush_all(self) -> None:
        while self._pending:
            if isinstance(self._pending[0], _TurnEnd):
                end = self._pending.popleft()
                assert isinstance(end, _TurnEnd)
                await self._write_end(end)
                continue
            batch: list[Fields] = []
            while self._pending and len(batch) < self._max_batch and isinstance(self._pending[0], list):
                item = self._pending.popleft()
                assert isinstance(item, list)
                batch.append(item)
            self._space.set()
            if not await self._write_with_retry(batch, self._retry_seconds if self._healthy else 0):
                self._uncertain = True
                self._stats.entries_dropped += len(batch)
                self.telemetry.dropped(len(batch))
                logger.warning("Dropped %d entries of %s: Valkey writes fail", len(batch), self.key)

    async def _write_end(self, end: _TurnEnd) -> None:
        entries: list[Fields] = []
        replaced = False
        if end.error is not None:
            entries.append(self._entry([("text", ""), ("error", end.error or "error")]))
        else:
            streamed = "".join(self._queued_text)
            final = end.final_text
            if final is not None and (self._uncertain or not final.startswith(streamed)):
                # Readers may have missed or repeated chunks, or the framework fell back to a
                # non-streaming run: the committed text replaces what was streamed.
                self._stats.turns_replaced += 1
                replaced = True
                entries.append(self._entry([("text", final), ("replace", "true")]))
            elif final is not None and final[len(streamed) :]:
                entries.append(self._entry([("text", final[len(streamed) :])]))
            done: Fields = [("text", ""), ("done", "true")]
            if end.cancelled:
                done.append(("cancelled", "true"))
            entries.append(self._entry(done))
        written = await self._write_with_retry(entries, self._end_retry_seconds)
        if not written:
            self._stats.entries_dropped += len(entries)
            self.telemetry.dropped(len(entries))
            logger.error("Gave up on the end of %s after %.0f s of failed writes", self.key, self._end_retry_seconds)
        kind = "error" if end.error is not None else "cancelled" if end.cancelled else "done"
        self.telemetry.ended(kind, written=written, replaced=replaced)

    async def _write_with_retry(self, batch: list[Fields], retry_seconds: float) -> bool:
        """Write ``batch``, retrying with backoff for ``retry_seconds``; whether it was written."""
        deadline = time.monotonic() + retry_seconds
        delay = 0.05
        while True:
            started = time.perf_counter()
            try:
                await self._write_batch(self.key, self.correlation_id, batch)
            except Exception as error:
                self.telemetry.batch_failed(len(batch), time.perf_counter() - started, error)
                # A failed (or timed-out) write may still have been applied: readers drop a repeated
                # (correlation_id, run, sequence), and the turn's end carries the committed text.
                self._uncertain = True
                self._stats.batch_failures += 1
                if time.monotonic() + delay > deadline:
                    self._healthy = False
                    self._space.set()
                    logger.debug("Valkey write to %s failed: %s", self.key, error)
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            elapsed = time.perf_counter() - started
            if not self._healthy:
                logger.info("Valkey writes to %s succeed again", self.key)
            self._healthy = True
            self._stats.entries_written += len(batch)
            self._stats.batches_written += 1
            self.telemetry.batch_written(len(batch), elapsed)
            return True


async def wait_briefly(task: asyncio.Task[None] | None, seconds: float) -> None:
    """Wait up to ``seconds`` for ``task`` without cancelling it when the time is up."""
    if task is not None and not task.done():
        with contextlib.suppress(Exception):
            await asyncio.wait({task}, timeout=seconds)
