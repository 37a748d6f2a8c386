"""The turns being written: one :class:`TurnWriter` per running turn, and the batch write they share.

Each batch of a turn's entries is one atomic, idempotent round trip (a Lua script, see
``_idempotent_append``): the XADDs of the entries Valkey does not have yet, the stream's TTL refresh,
and when due the turn's "was I cancelled?" question and the notification that wakes live readers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence

from glide import Batch, ClusterBatch, RequestError, StreamAddOptions, TrimByMaxLen
from opentelemetry import context as otel_context

from ._cancel_requests import CancelRequests
from ._cancel_watch import cancel_key
from ._coalesced_appends import CoalescedAppends, TurnBatch
from ._connection import GlideAnyClient
from ._glide import add_notification, atomic_batch, is_pubsub_refusal, is_scripting_refusal
from ._idempotent_append import (
    APPEND_SCRIPT,
    AppendResult,
    Entry,
    append_arguments,
    marks_key,
    parse_append_reply,
)
from ._ids import stream_key, validate_id
from ._notifications import PubSubSupport
from ._settings import ValkeySettings
from ._telemetry import TurnTelemetry
from ._turn_writer import HeldEntries, TurnWriter, WriteStats, wait_briefly

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
        write_retry_seconds: How long the agent's callback waits for its turn's end to be written
            while Valkey answers (while writes fail it does not wait), and how long closing waits for
            unwritten entries before it gives them up.
        max_held_bytes: The memory the process's writers may hold in entries Valkey has not
            confirmed (during an outage); past it the oldest queued entries are given up.

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
        max_held_bytes: int,
    ) -> None:
        if max_pending_chunks < 1:
            raise ValueError("max_pending_chunks must be at least 1")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if write_retry_seconds < 0:
            raise ValueError("write_retry_seconds must not be negative")
        if max_held_bytes < 1:
            raise ValueError("max_held_bytes must be at least 1")
        self.stats = WriteStats()
        self._settings = settings
        self._client = client
        self._cancels = cancels
        self._pubsub = pubsub
        self._max_pending = max_pending_chunks
        self._max_batch = max_batch
        self._retry_seconds = write_retry_seconds
        self.held = HeldEntries(max_held_bytes)
        self._scripting_refused = False
        self._turns: dict[tuple[str, str], TurnWriter] = {}
        self._ending: set[TurnWriter] = set()  # turns whose end is still being written
        # Standalone: the batches of a loop's turns share round trips (see _coalesced_appends).
        self._coalesced: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CoalescedAppends] = (
            weakref.WeakKeyDictionary()
        )
        self._last_sweep = time.monotonic()
        # A quiet turn is forgotten once its stream would have expired: no need to look more often.
        self._sweep_seconds = min(_SWEEP_SECONDS, settings.stream_ttl_seconds)

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
                self.held,
                max_pending=self._max_pending,
                max_batch=self._max_batch,
                # Entries not confirmed are retried for as long as the stream would live.
                retry_seconds=self._settings.stream_ttl_seconds,
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
        """Queue a turn's end; returns once it is written, after ``retry_seconds``, or when a write fails.

        The writer goes on retrying in the background what Valkey has not confirmed.

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
        await writer.settle(self._retry_seconds)

    async def flush(self, session_id: str, correlation_id: str) -> None:
        """Wait until a running turn's queued entries are written (or given up on); nothing if it is not running."""
        writer = self._turns.get((session_id, correlation_id))
        if writer is not None:
            await writer.drain()

    async def flush_loop(self) -> None:
        """Give this loop's writers (and ends still being retried) ``retry_seconds`` more; abandon the rest."""
        current = asyncio.get_running_loop()
        writers = [writer for writer in [*self._turns.values(), *self._ending] if writer.loop is current]
        for writer in writers:
            await wait_briefly(writer.flusher, self._retry_seconds + 1)
        for writer in writers:
            writer.abandon()

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

    async def _write_batch(self, key: str, correlation_id: str, run: str, entries: Sequence[Entry]) -> int | None:
        client = await self._client()
        # A watched turn (see CancelRequests.watch) asks whether it was cancelled in its batch, at
        # most every CANCEL_CHECK_SECONDS: a fast stream does not pay for a question per round trip.
        watch = self._cancels.watch_of(key, correlation_id)
        check = watch is not None and watch.check_due()
        if not self._scripting_refused:
            try:
                result = await self._append(client, key, correlation_id, run, entries, check)
            except RequestError as error:
                if not is_scripting_refusal(error):
                    raise
                self._scripting_refused = True
                logger.error(
                    "Valkey refuses scripting (%s): writes fall back to plain atomic batches, which a retry "
                    "may repeat (this package's readers drop repeats; readers of the reference schema do not)",
                    error,
                )
            else:
                if watch is not None and check:
                    watch.checked(result.cancelled)
                return result.mark_found
        cancelled = await self._append_without_script(client, key, correlation_id, entries, check)
        if watch is not None and check:
            watch.checked(cancelled)
        return None

    async def _append(
        self, client: GlideAnyClient, key: str, correlation_id: str, run: str, entries: Sequence[Entry], check: bool
    ) -> AppendResult:
        if not self._settings.cluster:
            result = await self._coalesced_appends().append(
                TurnBatch(
                    keys=(key, marks_key(key), cancel_key(key)),
                    correlation_id=correlation_id,
                    run=run,
                    cancel_check=check,
                    entries=entries,
                ),
                client,
            )
            self._note_publish_refusal(key, result)
            return result
        args = append_arguments(
            correlation_id=correlation_id,
            run=run,
            entries=entries,
            ttl_seconds=self._settings.stream_ttl_seconds,
            maxlen=self._settings.stream_maxlen,
            cancel_check=check,
            notify=("s" if self._settings.cluster else "p") if self._pubsub.writes_publish else "",
        )
        # The stream, its marks and the cancel set share a slot (their hash tag is the stream key).
        reply = await client.invoke_script(APPEND_SCRIPT, keys=[key, marks_key(key), cancel_key(key)], args=args)
        result = parse_append_reply(reply)
        self._note_publish_refusal(key, result)
        return result

    def _coalesced_appends(self) -> CoalescedAppends:
        loop = asyncio.get_running_loop()
        appends = self._coalesced.get(loop)
        if appends is None:
            appends = CoalescedAppends(
                self._client,
                ttl_seconds=self._settings.stream_ttl_seconds,
                maxlen=self._settings.stream_maxlen,
                notify=lambda: self._pubsub.writes_publish,
            )
            self._coalesced[loop] = appends
        return appends

    def _note_publish_refusal(self, key: str, result: AppendResult) -> None:
        if result.publish_refusal:
            refusal = RequestError(result.publish_refusal)
            if is_pubsub_refusal(refusal):
                # Readers elsewhere then poll (their feeds are refused too).
                self._pubsub.refuse_publish(refusal)
            else:
                logger.debug("A notification of %s failed: %s", key, result.publish_refusal)

    async def _append_without_script(
        self, client: GlideAnyClient, key: str, correlation_id: str, entries: Sequence[Entry], check: bool
    ) -> bool:
        """The fallback for a server without scripting: one atomic batch, not idempotent; whether cancelled."""
        notify = self._pubsub.writes_publish
        try:
            replies = await client.exec(self._batch(key, correlation_id, entries, notify, check), raise_on_error=True)
        except RequestError as error:
            if not (notify and is_pubsub_refusal(error)):
                raise
            # The server refused the batch at its notification, before running any of it.
            self._pubsub.refuse_publish(error)
            replies = await client.exec(self._batch(key, correlation_id, entries, False, check), raise_on_error=True)
        # The batch's replies: one per entry, the EXPIRE's, then the cancel check's.
        return bool(check and replies and replies[len(entries) + 1])

    def _batch(
        self, key: str, correlation_id: str, entries: Sequence[Entry], notify: bool, cancel_check: bool
    ) -> Batch | ClusterBatch:
        batch = atomic_batch(cluster=self._settings.cluster)
        trim = self._settings.stream_maxlen
        options = StreamAddOptions(trim=TrimByMaxLen(exact=False, threshold=trim) if trim else None)
        for entry in entries:
            batch.xadd(key, entry.pairs(), options)
        batch.expire(key, self._settings.stream_ttl_seconds)
        if cancel_check:
            batch.sismember(cancel_key(key), correlation_id)
        if notify:
            add_notification(batch, key)
        return batch
