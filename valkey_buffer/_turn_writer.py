"""Group commit for one turn: an ordered, bounded queue of entries flushed in atomic batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger("valkey_buffer")

Fields = list[tuple[str, str]]
# Writes one batch of entries (in order) to the turn's stream and refreshes its TTL, atomically.
BatchWriter = Callable[[str, Sequence[Fields]], Awaitable[None]]


@dataclass
class WriteStats:
    """Counters of the write path, for logs, health output and tests."""

    entries_written: int = 0
    batches_written: int = 0
    batch_failures: int = 0
    entries_dropped: int = 0


class TurnWriter:
    """Queues one turn's entries and writes them in order, many per round trip.

    The agent's callback only waits when the queue is full (backpressure). While Valkey is
    unreachable, a batch is retried for ``retry_seconds`` and then dropped and counted, and the
    queue stops applying backpressure until a write succeeds again, so an outage never stalls or
    fails the agent.
    """

    def __init__(
        self,
        key: str,
        write_batch: BatchWriter,
        stats: WriteStats,
        *,
        max_pending: int,
        max_batch: int,
        retry_seconds: float,
    ) -> None:
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.next_sequence = 0
        self.streamed_text: list[str] = []
        self._write_batch = write_batch
        self._stats = stats
        self._pending: deque[Fields] = deque()
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._retry_seconds = retry_seconds
        self._healthy = True
        self._space = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.last_activity = time.monotonic()

    @property
    def is_idle(self) -> bool:
        """Whether nothing is queued or being written."""
        return not self._pending and (self._flusher is None or self._flusher.done())

    async def add(self, fields: Fields) -> None:
        """Queue an entry; waits only while the queue is full and Valkey is healthy."""
        self.last_activity = time.monotonic()
        while len(self._pending) >= self._max_pending and self._healthy:
            self._space.clear()
            await self._space.wait()
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._stats.entries_dropped += 1
        self._pending.append(fields)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_all(), name=f"flush {self.key}")

    async def drain(self) -> None:
        """Wait until every queued entry has been written (or given up on)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), self._max_batch))]
            self._space.set()
            await self._write_with_retry(batch)

    async def _write_with_retry(self, batch: list[Fields]) -> None:
        # Retry only while healthy: during a known outage each batch gets a single attempt.
        deadline = time.monotonic() + (self._retry_seconds if self._healthy else 0)
        delay = 0.05
        while True:
            try:
                await self._write_batch(self.key, batch)
            except Exception as error:
                if time.monotonic() + delay > deadline:
                    self._healthy = False
                    self._stats.batch_failures += 1
                    self._stats.entries_dropped += len(batch)
                    logger.warning("Dropped %d entries for %s: Valkey write failed: %s", len(batch), self.key, error)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if not self._healthy:
                logger.info("Valkey writes to %s succeed again", self.key)
            self._healthy = True
            self._stats.entries_written += len(batch)
            self._stats.batches_written += 1
            return
