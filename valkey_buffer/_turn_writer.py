"""Group commit for one turn: an ordered queue of entries flushed in idempotent batches.

Valkey applies a batch at most once (see ``_idempotent_append``), so the writer can retry a batch
whose reply never came for as long as the stream would live, and nothing is lost or repeated while
the process lives. The turn's end is decided when the writer reaches it, not when the agent reports
it: only then is it known whether the stream holds every chunk. When it may not (entries were given
up on, or Valkey lost entries it had confirmed) or the committed text is not what was streamed, the
end carries the committed text in a ``replace`` entry, in a field of its own (``replace_text``) so
that a reader of the reference samples' schema, which appends every entry's ``text``, does not show
it after the chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ._chunk import TOOL_RESULT_MAX_CHARS
from ._idempotent_append import Entry
from ._telemetry import TurnTelemetry

logger = logging.getLogger("valkey_buffer")

Fields = list[tuple[str, str]]

# Writes one batch of a turn's entries (stream key, correlation id, run, entries in order): Valkey
# appends those above the run's mark and refreshes the TTL, atomically. Answers the mark it found,
# or None when the server cannot make the write idempotent (it refuses scripting).
BatchWriter = Callable[[str, str, str, Sequence[Entry]], Awaitable[int | None]]

# What an entry costs in memory beyond its text, roughly (field names, ids, the list and tuples).
_ENTRY_OVERHEAD_BYTES = 400


@dataclass
class WriteStats:
    """Counters of the write path, for logs, health output and tests."""

    entries_written: int = 0
    batches_written: int = 0
    batch_failures: int = 0
    entries_dropped: int = 0
    turns_replaced: int = 0
    turns_with_lost_entries: int = 0  # Valkey lost entries it had confirmed (a restart without its data)


class HeldEntries:
    """The entries the writers of a process hold until Valkey confirms them, against one cap.

    Args:
        max_bytes: The cap: past it, a turn gives up its oldest queued entries rather than grow.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0

    @property
    def over(self) -> bool:
        """Whether the writers hold more than the cap."""
        return self.bytes > self.max_bytes


@dataclass(frozen=True)
class _TurnEnd:
    """The end of a turn, queued behind its chunks: ``done`` (with the final text), or ``error``."""

    final_text: str | None
    error: str | None
    cancelled: bool


class TurnWriter:
    """Queues one turn's entries and writes them in order, many per round trip.

    The agent's callback waits only while the queue is full and Valkey answers (backpressure). When
    a write fails (Valkey down, paused, or slower than the request timeout) the callback stops
    waiting at once and the writer keeps every entry Valkey has not confirmed, retrying in the
    background for as long as the stream would live (``retry_seconds``), within the process-wide
    cap of ``held``. Repeated batches are ignored by Valkey, so a retry never appends twice.

    Args:
        key: The stream key.
        correlation_id: The turn, recorded in every entry.
        agent: The agent's name, recorded in every entry when given.
        write_batch: Writes a batch idempotently.
        stats: Counters shared by the buffer's writers.
        telemetry: The turn's span and the write metrics.
        held: The process-wide count of entries not yet confirmed, and its cap.
        max_pending: Entries queued before :meth:`add` waits, while Valkey answers.
        max_batch: Entries written per round trip at most.
        retry_seconds: How long a batch is retried before it is given up on.
    """

    def __init__(
        self,
        key: str,
        correlation_id: str,
        agent: str | None,
        write_batch: BatchWriter,
        stats: WriteStats,
        telemetry: TurnTelemetry,
        held: HeldEntries,
        *,
        max_pending: int,
        max_batch: int,
        retry_seconds: float,
    ) -> None:
        self.key = key
        self.correlation_id = correlation_id
        self.agent = agent
        self.loop = asyncio.get_running_loop()
        self.last_activity = time.monotonic()
        self._write_batch = write_batch
        self._stats = stats
        self.telemetry = telemetry
        self._held = held
        self._task_context: contextvars.Context | None = telemetry.task_context()
        self._pending: deque[Entry | _TurnEnd] = deque()
        self._in_flight: list[Entry] = []
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._retry_seconds = retry_seconds
        # Sequences start at 0 in every run of the turn; the run id tells readers a re-run from a
        # repeated write (see SequenceFilter), and names the run's mark in Valkey.
        self.run = secrets.token_hex(4)
        self._next_sequence = 0
        self._confirmed = -1  # the highest sequence Valkey has confirmed
        self._calls: dict[str, list[str]] = {}  # tool calls being streamed: call id -> [name, arguments]
        self._queued_text: list[str] = []  # every chunk's text, in order: what the stream should add up to
        self._uncertain = False  # the stream may lack entries of this turn (given up on, or lost by Valkey)
        self._healthy = True
        self._failing = asyncio.Event()  # set while writes fail: whoever waits for the writer stops
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
        """Queue a text chunk; waits only while the queue is full and Valkey answers."""
        await self._add([("text", text)], text=text)

    async def add_tool_result(self, call_id: str, result: str) -> None:
        """Queue a tool's result, cut at ``TOOL_RESULT_MAX_CHARS``; ``text`` stays empty."""
        fields = [("text", ""), ("tool", "result"), ("call_id", call_id), ("result", result[:TOOL_RESULT_MAX_CHARS])]
        if len(result) > TOOL_RESULT_MAX_CHARS:
            fields.append(("result_truncated", "true"))
        await self._add(fields)

    def note_call_piece(self, call_id: str, name: str, arguments: object) -> None:
        """Remember a piece of a streamed tool call; it is queued before the turn's next entry.

        A piece without a call id continues the last call. ``arguments`` is a mapping (a whole call)
        or JSON text (a piece of it, joined with the others).
        """
        if call_id and call_id not in self._calls:
            self._calls[call_id] = [name, ""]
        elif not self._calls:
            return
        call = self._calls[call_id] if call_id else self._calls[next(reversed(self._calls))]
        if name and not call[0]:
            call[0] = name
        if isinstance(arguments, str):
            call[1] += arguments
        elif arguments is not None:
            call[1] = json.dumps(arguments, ensure_ascii=False, default=str)

    def _take_calls(self) -> list[Fields]:
        calls: list[Fields] = [
            [("text", ""), ("tool", "call"), ("call_id", call_id), ("tool_name", name), ("arguments", args or "{}")]
            for call_id, (name, args) in self._calls.items()
        ]
        self._calls.clear()
        return calls

    async def _add(self, fields: Fields, *, text: str | None = None) -> None:
        if self._ended:
            raise RuntimeError(f"turn {self.correlation_id} has ended: no chunk may follow its end")
        # Calls being streamed are complete once something else of the turn follows them.
        if self._calls:
            for call in self._take_calls():
                await self._add_entry(call, text=None)
        await self._add_entry(fields, text=text)

    async def _add_entry(self, fields: Fields, *, text: str | None) -> None:
        self.last_activity = time.monotonic()
        while len(self._pending) >= self._max_pending and self._healthy:
            self._space.clear()
            await self._space.wait()
        if text is not None:
            # Only text counts towards what the committed answer is compared with.
            self._queued_text.append(text)
        self._queue(self._entry(fields))
        self._start_flushing()

    def end(self, *, final_text: str | None = None, error: str | None = None, cancelled: bool = False) -> None:
        """Queue the turn's end behind its chunks: ``done``, or ``error`` when ``error`` is given.

        With ``final_text`` (the committed answer), the writer appends what the chunks lack of it,
        or a ``replace`` entry carrying all of it when the chunks are not its prefix or the stream
        may lack some of them. ``cancelled`` marks the ``done`` of a stopped turn
        (``cancelled="true"``). A second end is ignored.
        """
        if self._ended:
            return
        for call in self._take_calls():
            # A call no result followed (the turn failed or stopped): it still shows, before the end.
            self._queue(self._entry(call))
        self._ended = True
        self.last_activity = time.monotonic()
        self._pending.append(_TurnEnd(final_text=final_text, error=error, cancelled=cancelled))
        self._start_flushing()

    async def drain(self) -> None:
        """Wait until every queued entry has been written (or given up on)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def settle(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the queue to be written, but not while writes fail."""
        flusher = self._flusher
        if flusher is None or flusher.done() or not self._healthy:
            return
        failing = asyncio.ensure_future(self._failing.wait())
        try:
            await asyncio.wait({flusher, failing}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failing.cancel()

    def abandon(self) -> None:
        """Stop writing: whatever is not confirmed yet is dropped and counted (the buffer is closing)."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        entries = [*self._in_flight, *(item for item in self._pending if isinstance(item, Entry))]
        ends = [item for item in self._pending if isinstance(item, _TurnEnd)]
        self._in_flight = []
        self._pending.clear()
        if entries or ends:
            self._dropped(entries, extra=len(ends))
            unwritten = len(entries) + len(ends)
            logger.warning("Abandoned %d unwritten entries of %s: the buffer closed", unwritten, self.key)
        for end in ends:
            self.telemetry.ended(_end_kind(end), written=False)

    def _queue(self, entry: Entry) -> None:
        self._pending.append(entry)
        self._held.bytes += entry.size
        while self._held.over and isinstance(self._pending[0], Entry):
            # Past the process's cap (a long outage): the oldest queued entry of this turn goes, and
            # the turn's end will carry the committed text.
            oldest = self._pending.popleft()
            assert isinstance(oldest, Entry)
            self._dropped([oldest])
            if not self._pending:
                break

    def _dropped(self, entries: Sequence[Entry], extra: int = 0) -> None:
        self._uncertain = True
        self._held.bytes -= sum(entry.size for entry in entries)
        self._stats.entries_dropped += len(entries) + extra
        self.telemetry.dropped(len(entries) + extra)

    def _start_flushing(self) -> None:
        if self._flusher is None or self._flusher.done():
            # The task runs with the turn's span current: what it logs carries the turn's trace.
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_all(), name=f"flush {self.key}", context=self._task_context
            )

    def _entry(self, fields: Fields) -> Entry:
        # Built flat, as the script takes it: this runs for every chunk the agent streams.
        sequence = self._next_sequence
        self._next_sequence += 1
        name, value = fields[0]
        flat = [name, value, "sequence", str(sequence), "timestamp", str(time.time_ns() // 1_000_000)]
        size = _ENTRY_OVERHEAD_BYTES + len(value)
        for name, value in fields[1:]:
            flat += (name, value)
            size += len(value)
        flat += ("correlation_id", self.correlation_id, "run", self.run)
        if self.agent:
            flat += ("agent", self.agent)
        return Entry(sequence, flat, size)

    async def _flush_all(self) -> None:
        while self._pending:
            if isinstance(self._pending[0], _TurnEnd):
                end = self._pending.popleft()
                assert isinstance(end, _TurnEnd)
                await self._write_end(end)
                continue
            batch: list[Entry] = []
            while self._pending and len(batch) < self._max_batch and isinstance(self._pending[0], Entry):
                item = self._pending.popleft()
                assert isinstance(item, Entry)
                batch.append(item)
            self._space.set()
            if not await self._write_with_retry(batch):
                self._dropped(batch)
                logger.warning("Dropped %d entries of %s: Valkey writes fail", len(batch), self.key)

    async def _write_end(self, end: _TurnEnd) -> None:
        replaced = False
        if end.error is not None:
            entries = [self._entry([("text", ""), ("error", end.error or "error")])]
        else:
            entries = []
            streamed = "".join(self._queued_text)
            final = end.final_text
            if final is not None and (self._uncertain or not final.startswith(streamed)):
                # The stream may lack chunks, or the framework fell back to a non-streaming run: the
                # committed text replaces what was streamed, in a field that only readers that know
                # ``replace`` look at (``text`` stays empty for the reference schema's readers).
                self._stats.turns_replaced += 1
                replaced = True
                entries.append(self._entry([("text", ""), ("replace", "true"), ("replace_text", final)]))
            elif final is not None and final[len(streamed) :]:
                entries.append(self._entry([("text", final[len(streamed) :])]))
            done: Fields = [("text", ""), ("done", "true")]
            if end.cancelled:
                done.append(("cancelled", "true"))
            entries.append(self._entry(done))
        for entry in entries:
            self._held.bytes += entry.size
        try:
            written = await self._write_with_retry(entries)
        except asyncio.CancelledError:
            # Abandoned while being written (the buffer is closing): the turn's span ends all the same.
            self.telemetry.ended(_end_kind(end), written=False, replaced=replaced)
            raise
        if not written:
            self._dropped(entries)
            logger.error("Gave up on the end of %s after %.0f s of failed writes", self.key, self._retry_seconds)
        self.telemetry.ended(_end_kind(end), written=written, replaced=replaced)

    async def _write_with_retry(self, batch: list[Entry]) -> bool:
        """Write ``batch``, retrying with backoff for ``retry_seconds``; whether it was written."""
        self._in_flight = batch
        deadline = time.monotonic() + self._retry_seconds
        delay = 0.05
        failed = False
        while True:
            started = time.perf_counter()
            try:
                mark_found = await self._write_batch(self.key, self.correlation_id, self.run, batch)
            except Exception as error:
                self.telemetry.batch_failed(len(batch), time.perf_counter() - started, error)
                # A failed (or timed-out) write may still have been applied: Valkey ignores the
                # entries of the retry that it has already appended.
                self._stats.batch_failures += 1
                failed = True
                if self._healthy:
                    self._healthy = False
                    self._failing.set()
                    self._space.set()
                    logger.info("Valkey writes to %s fail (%s): retrying in the background", self.key, error)
                if time.monotonic() + delay > deadline:
                    self._in_flight = []
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            elapsed = time.perf_counter() - started
            self._in_flight = []
            if mark_found is None:
                # A write that is not idempotent: after a failed attempt the stream may repeat
                # entries (our readers drop them) or lack some; the end carries the committed text.
                self._uncertain = self._uncertain or failed
            elif mark_found < self._confirmed:
                # Valkey no longer has entries it confirmed (it restarted without its data, or a
                # failover lost writes): the turn's end must carry the committed text.
                if not self._uncertain:
                    self._stats.turns_with_lost_entries += 1
                    logger.warning("Valkey lost entries of %s it had confirmed", self.key)
                self._uncertain = True
            self._confirmed = max(self._confirmed, batch[-1].sequence)
            self._held.bytes -= sum(entry.size for entry in batch)
            if not self._healthy:
                logger.info("Valkey writes to %s succeed again", self.key)
                self._healthy = True
                self._failing.clear()
            self._stats.entries_written += len(batch)
            self._stats.batches_written += 1
            self.telemetry.batch_written(len(batch), elapsed)
            return True


def _end_kind(end: _TurnEnd) -> str:
    return "error" if end.error is not None else "cancelled" if end.cancelled else "done"


async def wait_briefly(task: asyncio.Task[None] | None, seconds: float) -> None:
    """Wait up to ``seconds`` for ``task`` without cancelling it when the time is up."""
    if task is not None and not task.done():
        with contextlib.suppress(Exception):
            await asyncio.wait({task}, timeout=seconds)
