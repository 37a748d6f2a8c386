"""The turns being written: one :class:`TurnWriter` per running turn, and the batch write they share.

Each batch of a turn's entries is one atomic round trip: the XADDs, the stream's TTL refresh, and
when due the turn's "was I cancelled?" question and the notification that wakes live readers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from glide import Batch, ClusterBatch, RequestError, StreamAddOptions, TrimByMaxLen
from opentelemetry import context as otel_context

from ._cancel_requests import CancelRequests
from ._cancel_watch import cancel_key
from ._connection import GlideAnyClient
from ._glide import add_notification, atomic_batch, is_pubsub_refusal
from ._ids import stream_key, validate_id
from ._notifications import PubSubSupport
from ._settings import ValkeySettings
from ._telemetry import TurnTelemetry
from ._turn_writer import Fields, TurnWriter, WriteStats, wait_briefly

logger = logging.getLogger("valkey_buffer")

# How often, at most, writers left by a producer that died are looked for.
_SWEEP_SECONDS = 60.0


class TurnWriters:
    """The writers of the turns this buffer writes, by ``(session_id, correlation_id)``.

    Args:
        settings: The stream TTL and length cap, and the server kind.
        client: The running loop's client for writes.
        cancels: The cancel watches of running turns, answered inside their write batches.
        pubsub: Whether write batches publish a notification.
        max_pending_chunks: Entries one turn may queue before the callback waits (backpressure).
        max_batch: Entries written per round trip at most.
        write_retry_seconds: How long a failed batch of chunks is retried, and how long a turn's end
            is waited for.

    Raises:
        ValueError: If a number is out of range.
    """

    def __init__(
        self,
        settings: ValkeySettings,
        client: Callable[[], Awaitable[GlideAnyClient]],
        cancels: CancelRequests,
        pubsub: PubSubSupport,
        *,
        max_pending_chunks: int,
        max_batch: int,
        write_retry_seconds: float,
    ) -> None:
        if max_pending_chunks < 1:
            raise ValueError("max_pending_chunks must be at least 1")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if write_retry_seconds < 0:
            raise ValueError("write_retry_seconds must not be negative")
        self.stats = WriteStats()
        self._settings = settings
        self._client = client
        self._cancels = cancels
        self._pubsub = pubsub
        self._max_pending = max_pending_chunks
        self._max_batch = max_batch
        self._retry_seconds = write_retry_seconds
        self._turns: dict[tuple[str, str], TurnWriter] = {}
        self._ending: set[TurnWriter] = set()  # turns whose end is still being written
        self._last_sweep = time.monotonic()
        # A quiet turn is forgotten once its stream would have expired: no need to look more often.
        self._sweep_seconds = min(_SWEEP_SECONDS, settings.stream_ttl_seconds)
        self._trim = TrimByMaxLen(exact=False, threshold=settings.stream_maxlen) if settings.stream_maxlen else None

    def open_turns(self) -> set[tuple[str, str]]:
        """The turns begun and not ended, as ``(session_id, correlation_id)``."""
        return set(self._turns)

    def turn(
        self,
        session_id: str,
        correlation_id: str,
        agent: str | None,
        *,
        trace_context: otel_context.Context | None = None,
        accepted_at_ms: int | None = None,
    ) -> TurnWriter:
        """The writer of a turn, begun on first use.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        writer = self._turns.get((session_id, correlation_id))
        if writer is None:
            # The ids are checked once, when the turn's first entry arrives, not for every chunk.
            key = stream_key(session_id)
            validate_id(correlation_id, "correlation_id")
            self._forget_abandoned_turns()
            telemetry = TurnTelemetry(
                session_id=session_id,
                correlation_id=correlation_id,
                agent=agent,
                parent=trace_context,
                accepted_at_ms=accepted_at_ms,
            )
            writer = TurnWriter(
                key,
                correlation_id,
                agent,
                self._write_batch,
                self.stats,
                telemetry,
                max_pending=self._max_pending,
                max_batch=self._max_batch,
                retry_seconds=self._retry_seconds,
                end_retry_seconds=self._settings.stream_ttl_seconds,
            )
            self._turns[(session_id, correlation_id)] = writer
        return writer

    async def end(
        self,
        session_id: str,
        correlation_id: str,
        agent: str | None,
        *,
        final_text: str | None,
        error: str | None,
        cancelled: bool,
    ) -> None:
        """Queue a turn's end; returns once it is written or after ``retry_seconds`` (it is retried on).

        Raises:
            InvalidIdError: If an id is invalid.
        """
        writer = self.turn(session_id, correlation_id, agent)
        writer.end(final_text=final_text, error=error, cancelled=cancelled)
        # The turn is over for the agent; its writer lives on until the end is in Valkey.
        del self._turns[(session_id, correlation_id)]
        self._cancels.forget(writer.key, correlation_id)
        flusher = writer.flusher
        if flusher is not None and not flusher.done():
            self._ending.add(writer)
            flusher.add_done_callback(lambda _: self._ending.discard(writer))
        # Usually the end is written within a round trip; during an outage the agent does not wait
        # for it: the writer retries it in the background.
        await wait_briefly(flusher, self._retry_seconds)

    async def flush(self, session_id: str, correlation_id: str) -> None:
        """Wait until a running turn's queued entries are written (or given up on); nothing if it is not running."""
        writer = self._turns.get((session_id, correlation_id))
        if writer is not None:
            await writer.drain()

    async def flush_loop(self) -> None:
        """Give this loop's writers, and ends still being retried, ``retry_seconds`` more to finish."""
        current = asyncio.get_running_loop()
        for writer in [*self._turns.values(), *self._ending]:
            if writer.loop is current:
                await wait_briefly(writer.flusher, self._retry_seconds + 1)

    def _forget_abandoned_turns(self) -> None:
        # A turn whose producer died never gets its done or error: drop its writer (and the text it
        # remembers) once the turn has been quiet for as long as its stream lives.
        now = time.monotonic()
        if now - self._last_sweep < self._sweep_seconds:
            return
        self._last_sweep = now
        cutoff = now - self._settings.stream_ttl_seconds
        for turn, writer in list(self._turns.items()):
            if writer.is_idle and writer.last_activity < cutoff:
                del self._turns[turn]
                writer.telemetry.ended("abandoned", written=False)

    async def _write_batch(self, key: str, correlation_id: str, entries: Sequence[Fields]) -> None:
        client = await self._client()
        notify = self._pubsub.writes_publish
        # A watched turn (see CancelRequests.watch) asks whether it was cancelled in its batch, at
        # most every CANCEL_CHECK_SECONDS: a fast stream does not pay for a question per round trip.
        watch = self._cancels.watch_of(key, correlation_id)
        check = cancel_key(key) if watch is not None and watch.check_due() else None
        try:
            replies = await client.exec(self._batch(key, correlation_id, entries, notify, check), raise_on_error=True)
        except RequestError as error:
            if not (notify and is_pubsub_refusal(error)):
                raise
            # The server refused the batch at its notification, before running any of it: write the
            # entries again without one. Readers elsewhere then poll (their feeds are refused too).
            self._pubsub.refuse_publish(error)
            replies = await client.exec(self._batch(key, correlation_id, entries, False, check), raise_on_error=True)
        if watch is not None and check is not None and replies:
            # The batch's replies: one per entry, the EXPIRE's, then the cancel check's.
            watch.checked(bool(replies[len(entries) + 1]))

    def _batch(
        self, key: str, correlation_id: str, entries: Sequence[Fields], notify: bool, cancel_check: str | None
    ) -> Batch | ClusterBatch:
        batch = atomic_batch(cluster=self._settings.cluster)
        options = StreamAddOptions(trim=self._trim)
        for entry in entries:
            batch.xadd(key, entry, options)
        # The TTL refresh rides in the same atomic batch: a stream never outlives its TTL unrefreshed.
        batch.expire(key, self._settings.stream_ttl_seconds)
        # So does the question "was this turn cancelled?" (the set is in the stream's slot).
        if cancel_check is not None:
            batch.sismember(cancel_check, correlation_id)
        if notify:
            # Wakes the live feeds that follow the stream once the entries are there to read; the
            # channel is the key, so in a cluster it is on the key's slot and the batch on one node.
            add_notification(batch, key)
        return batch
