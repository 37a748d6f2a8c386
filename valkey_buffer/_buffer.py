"""ValkeyStreamBuffer: the agents' response callback and the readers of their streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from glide import (
    Batch,
    ClusterBatch,
    ExclusiveIdBound,
    GlideError,
    IdBound,
    MaxId,
    MinId,
    RequestError,
    StreamAddOptions,
    TrimByMaxLen,
)
from opentelemetry import context as otel_context

from ._cancellation import TurnCancellation, cancel_key, marks_cancelled
from ._chunk import StreamChunk
from ._connection import EntraTokenSource, GlideAnyClient, TokenCredential
from ._errors import InvalidCursorError, ValkeyUnavailableError
from ._ids import LAST_POSSIBLE_ENTRY_ID, entry_order, parse_cursor, stream_key, turns_key, validate_id
from ._loop_clients import LiveFeedMode, LoopClients
from ._notified_feed import NotifiedFeed, add_notification, is_pubsub_refusal
from ._settings import ValkeySettings
from ._stream_reader import CommittedTurnLookup, SequenceFilter, StreamReader
from ._telemetry import ReaderTelemetry, TurnTelemetry, trace_carrier
from ._turn_writer import Fields, TurnWriter, WriteStats, wait_briefly

if TYPE_CHECKING:
    from agent_framework import AgentResponse, AgentResponseUpdate
    from agent_framework_durabletask import AgentCallbackContext

logger = logging.getLogger("valkey_buffer")

_CATCH_UP_PAGE = 512


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


@dataclass(frozen=True)
class AcceptedTurn:
    """The record of a turn an HTTP route accepted (see ``ValkeyStreamBuffer.record_turn_accepted``).

    Attributes:
        agent: The agent that runs the turn.
        accepted_at_ms: When it was accepted, in milliseconds since the epoch.
        message: The user's message, when it was recorded (the agent's state has it only once the
            turn is committed).
        trace_headers: The W3C trace context (``traceparent``...) of the request that accepted it;
            empty when it was not traced.
    """

    agent: str
    accepted_at_ms: int
    message: str | None = None
    trace_headers: Mapping[str, str] = field(default_factory=dict)


class ValkeyStreamBuffer:
    """Appends an agent's streamed text to Valkey streams and reads it back, live or resumed.

    Register it as the durable agents' response callback (``AgentResponseCallbackProtocol``);
    every streamed chunk lands in ``agent-stream:{session_id}``. Readers follow a stream from any
    entry id, so a client that disconnects resumes where it left off.

    Constructing a buffer connects to nothing. Each running event loop gets its own clients,
    created on first use: one for writes and non-blocking reads, and one for the live feed.

    Args:
        settings: Connection and behaviour settings; ``ValkeySettings.from_env()`` when ``None``.
        credential: The ``azure-identity`` credential for ``auth="entra"``;
            ``DefaultAzureCredential`` when ``None``.
        max_pending_chunks: Entries one turn may queue before the callback waits (backpressure).
        max_batch: Entries written per round trip at most.
        write_retry_seconds: How long a failed batch of chunks is retried before it is dropped and
            counted, and how long the callback waits for a turn's end to be written (the end itself
            is never dropped: it is retried in the background for as long as the stream lives).
        token_refresh_margin_seconds: With Entra ID, renew tokens this long before they expire.
        live_feed: How live readers learn of new entries. ``auto`` (the default): one blocking
            multi-key read on a standalone server (``blocking``), sharded pub/sub notifications in
            a cluster (``notifications``: every write batch publishes one, and a server that
            refuses pub/sub makes the feed poll). ``polling``: a cluster feed that polls every
            followed stream 5-50 ms apart and writes that publish nothing. ``notifications`` on a
            standalone server uses plain pub/sub.
        safety_poll_seconds: With notifications, how often every followed stream is read without
            one (a lost notification costs at most this long); the only Valkey traffic of idle readers.

    Raises:
        ValueError: If a number is out of range, or ``live_feed`` does not fit the server.
    """

    def __init__(
        self,
        settings: ValkeySettings | None = None,
        *,
        credential: TokenCredential | None = None,
        max_pending_chunks: int = 10_000,
        max_batch: int = 256,
        write_retry_seconds: float = 5.0,
        token_refresh_margin_seconds: float = 300.0,
        live_feed: Literal["auto", "blocking", "polling", "notifications"] = "auto",
        safety_poll_seconds: float = 5.0,
    ) -> None:
        if max_pending_chunks < 1:
            raise ValueError("max_pending_chunks must be at least 1")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if write_retry_seconds < 0:
            raise ValueError("write_retry_seconds must not be negative")
        if safety_poll_seconds <= 0:
            raise ValueError("safety_poll_seconds must be positive")
        self.settings = settings or ValkeySettings.from_env()
        self._live_feed = _live_feed_for(live_feed, cluster=self.settings.cluster)
        self._safety_poll_seconds = safety_poll_seconds
        # Writes publish a notification when readers are woken by them, until the server refuses one.
        self._notify_readers = self._live_feed == "notifications"
        self.stats = WriteStats()
        self.malformed_entries = 0
        self._credential = credential
        self._token_refresh_margin = token_refresh_margin_seconds
        self._token_source: EntraTokenSource | None = None
        self._max_pending = max_pending_chunks
        self._max_batch = max_batch
        self._write_retry_seconds = write_retry_seconds
        self._turns: dict[tuple[str, str], TurnWriter] = {}  # (conversation id, correlation id)
        self._ending: set[TurnWriter] = set()  # turns whose end is still being written
        self._cancellations: dict[tuple[str, str], TurnCancellation] = {}  # (stream key, correlation id)
        self._last_sweep = time.monotonic()
        self._loops: dict[asyncio.AbstractEventLoop, LoopClients] = {}
        self._loops_lock = threading.Lock()
        self._trim = (
            TrimByMaxLen(exact=False, threshold=self.settings.stream_maxlen) if self.settings.stream_maxlen else None
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> ValkeyStreamBuffer:
        """Create a buffer from ``VALKEY_*`` environment variables (see ``ValkeySettings.from_env``)."""
        return cls(ValkeySettings.from_env(), **kwargs)

    # ----- the callback protocol (agent_framework_durabletask.AgentResponseCallbackProtocol) -----

    async def on_streaming_response_update(self, update: AgentResponseUpdate, context: AgentCallbackContext) -> None:
        """Queue one streamed chunk; returns at once unless the turn's queue is full.

        Never raises: a failure is logged and counted, the agent's turn goes on.
        """
        text = update.text
        if not text:
            return
        try:
            await self.write_chunk(
                _session_of(context), text, correlation_id=context.correlation_id, agent=context.agent_name
            )
        except Exception:
            logger.exception("Could not queue a streamed chunk for %s", context.session_id)

    async def on_agent_response(self, response: AgentResponse, context: AgentCallbackContext) -> None:
        """End the turn with its final text: what the stream lacks of it, then ``done``.

        When the streamed chunks are a prefix of the final text (the usual case) the remainder is
        appended; when they are not (the framework fell back to a non-streaming run after the
        stream failed) or a write of the turn failed, a ``replace`` entry carries the full text. A
        response marked as cancelled (see ``cancelled_marker``) ends with ``done`` plus
        ``cancelled="true"``. Never raises.
        """
        try:
            await self.write_completion(
                _session_of(context),
                correlation_id=context.correlation_id,
                agent=context.agent_name,
                final_text=response.text or "",
                cancelled=marks_cancelled(response.messages),
            )
        except Exception:
            logger.exception("Could not complete the stream of %s", context.session_id)

    # ----- direct writes -----

    async def write_chunk(
        self, conversation_id: str, text: str, *, correlation_id: str, agent: str | None = None
    ) -> None:
        """Queue a text chunk of a turn; it is written in order with the turn's other entries.

        Args:
            conversation_id: The session whose stream receives the chunk.
            text: The chunk's text.
            correlation_id: The turn the chunk belongs to.
            agent: The agent's name, recorded in the entry.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        await self._turn(conversation_id, correlation_id, agent).add(text)

    async def write_completion(
        self,
        conversation_id: str,
        *,
        correlation_id: str,
        agent: str | None = None,
        final_text: str | None = None,
        cancelled: bool = False,
    ) -> None:
        """End the turn with ``done`` after all its queued chunks.

        Returns once the end is written, or after ``write_retry_seconds`` while Valkey fails: the
        end is then retried in the background for as long as the stream lives.

        Args:
            conversation_id: The session.
            correlation_id: The turn.
            agent: The agent's name, recorded in the entries.
            final_text: The committed answer: what the chunks lack of it is appended, or it replaces
                them (``replace`` entry) when they are not its prefix or a write failed.
            cancelled: The turn was stopped: its ``done`` entry says so (``cancelled="true"``).

        Raises:
            InvalidIdError: If an id is invalid.
        """
        await self._end(conversation_id, correlation_id, agent, final_text=final_text, error=None, cancelled=cancelled)

    async def write_error(
        self, conversation_id: str, message: str, *, correlation_id: str, agent: str | None = None
    ) -> None:
        """End the turn with an ``error`` entry after all its queued chunks (see ``write_completion``).

        Raises:
            InvalidIdError: If an id is invalid.
        """
        await self._end(
            conversation_id, correlation_id, agent, final_text=None, error=message or "error", cancelled=False
        )

    def begin_turn(
        self,
        conversation_id: str,
        correlation_id: str,
        *,
        agent: str | None = None,
        trace_context: otel_context.Context | None = None,
        accepted_at_ms: int | None = None,
    ) -> None:
        """Say where a turn's telemetry belongs, before its first chunk (optional; call it on the agent's loop).

        The turn's ``agent_stream.write`` span joins ``trace_context`` (the trace of the request that
        accepted the turn, carried across the durable hop), and ``agent_stream.turn.time_to_first_chunk``
        is measured from ``accepted_at_ms``. Without this call the span joins the current trace and no
        time to first chunk is recorded. A turn that has begun already is left as it is.

        Args:
            conversation_id: The session.
            correlation_id: The turn.
            agent: The agent's name.
            trace_context: The trace the turn's span joins.
            accepted_at_ms: When the turn was accepted, in milliseconds since the epoch.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        self._turn(conversation_id, correlation_id, agent, trace_context=trace_context, accepted_at_ms=accepted_at_ms)

    async def record_turn_accepted(
        self,
        conversation_id: str,
        correlation_id: str,
        agent: str,
        *,
        message: str | None = None,
        accepted_at_ms: int | None = None,
    ) -> AcceptedTurn:
        """Record that a turn was accepted (and its message), for as long as its stream would live.

        A turn exists from the moment an HTTP route accepts it, before the agent's state knows it:
        :meth:`accepted_turn` tells "accepted, not started yet" from "never accepted". The record
        keeps the current trace context, to which the turn's readers link their spans.

        Args:
            conversation_id: The session.
            correlation_id: The turn.
            agent: The agent that runs it.
            message: The user's message (the agent's state has it only once the turn is committed).
            accepted_at_ms: When it was accepted (milliseconds since the epoch); now by default.

        Returns:
            The record written.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = turns_key(conversation_id)
        validate_id(correlation_id, "correlation_id")
        accepted = AcceptedTurn(
            agent=agent,
            accepted_at_ms=int(time.time() * 1000) if accepted_at_ms is None else accepted_at_ms,
            message=message,
            trace_headers=trace_carrier(),
        )
        fields: dict[str, Any] = {
            "agent": accepted.agent,
            "accepted_at_ms": accepted.accepted_at_ms,
            "message": accepted.message,
        }
        if accepted.trace_headers:
            fields["trace"] = dict(accepted.trace_headers)
        record = json.dumps(fields)
        batch: Batch | ClusterBatch = ClusterBatch(is_atomic=True) if self.settings.cluster else Batch(is_atomic=True)
        batch.hset(key, {correlation_id: record})
        batch.expire(key, self.settings.stream_ttl_seconds)
        async with self._valkey() as client:
            await client.exec(batch, raise_on_error=True)
        return accepted

    async def accepted_turn(self, conversation_id: str, correlation_id: str) -> AcceptedTurn | None:
        """The record of an accepted turn (see :meth:`record_turn_accepted`), ``None`` if there is none.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = turns_key(conversation_id)
        validate_id(correlation_id, "correlation_id")
        async with self._valkey() as client:
            raw = await client.hget(key, correlation_id)
        return None if raw is None else _accepted_turn(raw)

    async def accepted_turns(self, conversation_id: str) -> dict[str, AcceptedTurn]:
        """Every recorded accepted turn of a session still within the stream's TTL, by correlation id.

        Raises:
            InvalidIdError: If the id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = turns_key(conversation_id)
        async with self._valkey() as client:
            raw = await client.hgetall(key)
        turns: dict[str, AcceptedTurn] = {}
        for correlation_id, value in (raw or {}).items():
            record = _accepted_turn(value)
            if record is not None:
                turns[_text(correlation_id)] = record
        return turns

    # ----- cancellation -----

    async def request_cancel(self, conversation_id: str, correlation_id: str) -> None:
        """Ask the instance that runs a turn to stop it (it learns within a chunk or a fraction of a second).

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached (nothing was requested).
        """
        key = cancel_key(stream_key(conversation_id))
        validate_id(correlation_id, "correlation_id")
        batch: Batch | ClusterBatch = ClusterBatch(is_atomic=True) if self.settings.cluster else Batch(is_atomic=True)
        batch.sadd(key, [correlation_id])
        batch.expire(key, self.settings.stream_ttl_seconds)
        async with self._valkey() as client:
            await client.exec(batch, raise_on_error=True)

    async def is_cancel_requested(self, conversation_id: str, correlation_id: str) -> bool:
        """Whether a cancel was requested for a turn.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = cancel_key(stream_key(conversation_id))
        validate_id(correlation_id, "correlation_id")
        async with self._valkey() as client:
            return bool(await client.sismember(key, correlation_id))

    def watch_cancellation(self, conversation_id: str, correlation_id: str) -> TurnCancellation:
        """The cancellation of a running turn, to enter around the agent's run (see ``TurnCancellation``).

        The turn's write batches ask for it (at most every ``CANCEL_CHECK_SECONDS``), at no extra
        round trip.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        turn = (stream_key(conversation_id), validate_id(correlation_id, "correlation_id"))
        watch = TurnCancellation(
            lambda: self.is_cancel_requested(conversation_id, correlation_id),
            on_exit=lambda: self._cancellations.pop(turn, None),
        )
        self._cancellations[turn] = watch
        return watch

    # ----- readers -----

    def read_stream(
        self,
        conversation_id: str,
        cursor: str | None = None,
        *,
        correlation_id: str | None = None,
        idle_timeout: float | None = None,
        committed_turn: CommittedTurnLookup | None = None,
        resumed: bool | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Yield a stream's entries after ``cursor``, then follow new ones live.

        The iterator ends after the terminal entry (``done`` or ``error``) of the turn it follows:
        the turn ``correlation_id`` names (other turns' entries are skipped), or without one the
        first turn it meets. An entry written twice (a write retried after a timeout) is yielded
        once. A cursor at or after the followed turn's terminal entry yields that entry at once.

        With ``committed_turn``, a reader whose turn writes nothing for
        ``settings.read_reconcile_seconds`` (or whose turn has nothing in the stream at all) asks
        the committed outcome; a committed turn then ends at once with a ``replace`` chunk holding
        the committed text and ``done`` (or an ``error``), both without an entry id. When nothing
        at all arrives for ``idle_timeout`` seconds it yields a chunk with ``kind="error"`` and an
        empty ``entry_id`` and ends. A Valkey outage after the first entry does not end it: it
        reads on when Valkey is back.

        Args:
            conversation_id: The session to read.
            cursor: The last entry id the reader has (exclusive); ``None`` or ``0`` for the start.
            correlation_id: Follow this turn only.
            idle_timeout: Seconds to wait for an entry; ``settings.read_idle_timeout_seconds`` by default.
            committed_turn: Looks up a turn's committed outcome (the source of truth).
            resumed: Whether the read resumes a read that was cut (``agent_stream.resumes``, its
                catch-up counted in ``agent_stream.replayed.entries``); by default, whether a cursor
                was given. A reader that starts after the stream's current end to follow a new turn
                is not a resume.

        Yields:
            The entries, in order, each once.

        Raises:
            InvalidIdError: If an id is invalid.
            InvalidCursorError: If the cursor is not an entry id.
            ValkeyUnavailableError: If Valkey cannot be reached before the first entry.
        """
        # The reader's span joins the trace current now (the HTTP request that reads), not the one
        # current when the response body is iterated.
        return self._read_stream(
            conversation_id,
            cursor,
            correlation_id=correlation_id,
            idle_timeout=idle_timeout,
            committed_turn=committed_turn,
            resumed=cursor is not None if resumed is None else resumed,
            parent=otel_context.get_current(),
        )

    async def _read_stream(
        self,
        conversation_id: str,
        cursor: str | None,
        *,
        correlation_id: str | None,
        idle_timeout: float | None,
        committed_turn: CommittedTurnLookup | None,
        resumed: bool,
        parent: otel_context.Context,
    ) -> AsyncIterator[StreamChunk]:
        key, position = _reader_start(conversation_id, cursor, correlation_id)
        clients = self._clients()
        telemetry = ReaderTelemetry(
            conversation_id=conversation_id,
            correlation_id=correlation_id,
            resumed=resumed,
            parent=parent,
            turn_trace=lambda turn: self._turn_trace_headers(conversation_id, turn),
        )
        reader = StreamReader(
            key=key,
            position=position,
            correlation_id=correlation_id,
            feed=clients.feed(),
            read_after=lambda after: self._entries_after(key, after),
            read_back=lambda at, count: self._entries_back(key, at, count),
            idle_timeout=self.settings.read_idle_timeout_seconds if idle_timeout is None else idle_timeout,
            reconcile_after=self.settings.read_reconcile_seconds,
            committed_turn=committed_turn,
            telemetry=telemetry,
        )
        async with contextlib.aclosing(reader.chunks()) as chunks:
            async for chunk in chunks:
                yield chunk

    async def read_available(
        self,
        conversation_id: str,
        cursor: str | None = None,
        *,
        correlation_id: str | None = None,
        count: int | None = None,
    ) -> list[StreamChunk]:
        """Return the entries written so far after ``cursor``, without waiting for new ones.

        For clients that poll instead of holding a connection. Stops after the followed turn's
        terminal entry, like ``read_stream``, and drops repeated entries the same way.

        Args:
            conversation_id: The session to read.
            cursor: The last entry id the reader has (exclusive); ``None`` or ``0`` for the start.
            correlation_id: Return this turn's entries only.
            count: Return at most this many entries.

        Raises:
            InvalidIdError: If an id is invalid.
            InvalidCursorError: If the cursor is not an entry id.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key, position = _reader_start(conversation_id, cursor, correlation_id)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        sequences = SequenceFilter()
        if position != "0-0":
            for _, before in await self._entries_back(key, position, 64):
                if before is not None:
                    sequences.learn(before)
        chunks: list[StreamChunk] = []
        async for _, entry in self._entries_after(key, position):
            if entry is None or not _wanted(entry, correlation_id):
                continue
            for chunk in sequences.admit(entry):
                chunks.append(chunk)
                if chunk.is_terminal or (count is not None and len(chunks) >= count):
                    return chunks
        return chunks

    async def latest_entry_id(self, conversation_id: str) -> str:
        """The id of the stream's newest entry, ``0-0`` when the stream is empty or absent.

        Read it before starting a turn and follow the turn from there: every entry of the new turn
        comes after it, so the reader skips the session's history.

        Raises:
            InvalidIdError: If the id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = stream_key(conversation_id)
        async with self._valkey() as client:
            reply = await client.xrevrange(key, MaxId(), MinId(), count=1)
        return next((_text(entry_id) for entry_id in (reply or {})), "0-0")

    async def check_cursor(self, conversation_id: str, cursor: str | None) -> None:
        """Refuse a cursor that is after the stream's newest entry: no entry of it can have that id.

        An empty or absent stream accepts any cursor (it may have expired, or Valkey lost it; a
        reader with ``committed_turn`` then ends with the committed outcome).

        Raises:
            InvalidIdError: If the id is invalid.
            InvalidCursorError: If the cursor is malformed or after the newest entry.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        position = parse_cursor(cursor)
        latest = await self.latest_entry_id(conversation_id)
        if position is not None and latest != "0-0" and entry_order(position) > entry_order(latest):
            raise InvalidCursorError(f"cursor {position} is after the stream's newest entry {latest}")

    def reader_stats(self) -> ReaderStats:
        """The live readers of the running event loop: how many, and what they hold in memory."""
        feed = self._clients().feed()
        mode = self._live_feed
        if isinstance(feed, NotifiedFeed) and feed.pubsub_refused:
            mode = "polling" if self.settings.cluster else "blocking"
        return ReaderStats(
            active=feed.reader_count, queued_entries=feed.queued_entries, overflows=feed.overflows, live_feed=mode
        )

    async def ping(self) -> bool:
        """Whether Valkey answers now (for health checks); never raises."""
        try:
            client = await self._clients().writer()
            await asyncio.wait_for(client.ping(), timeout=self.settings.request_timeout_ms / 1000 + 1)
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Write out queued entries of this event loop and close every client. Idempotent.

        A turn end still being retried is given ``write_retry_seconds`` more, then abandoned.
        """
        current = asyncio.get_running_loop()
        for writer in [*self._turns.values(), *self._ending]:
            if writer.loop is current:
                await wait_briefly(writer.flusher, self._write_retry_seconds + 1)
        with self._loops_lock:
            loops = dict(self._loops)
            self._loops.clear()
        for loop, clients in loops.items():
            if loop is current:
                await clients.aclose()
            elif loop.is_running():
                # Clients belong to their loop: close them there.
                future = asyncio.run_coroutine_threadsafe(clients.aclose(), loop)
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(future)

    # ----- internals -----

    @contextlib.asynccontextmanager
    async def _valkey(self) -> AsyncIterator[GlideAnyClient]:
        """The writer client of this event loop; a Valkey error inside becomes ``ValkeyUnavailableError``."""
        try:
            yield await self._clients().writer()
        except GlideError as error:
            raise ValkeyUnavailableError(f"Valkey at {self.settings.address} is unavailable: {error}") from error

    def _clients(self) -> LoopClients:
        loop = asyncio.get_running_loop()
        clients = self._loops.get(loop)
        if clients is None:
            with self._loops_lock:
                clients = self._loops.setdefault(
                    loop,
                    LoopClients(
                        self.settings,
                        self._token_source_for_entra(),
                        self._parse,
                        live_feed=self._live_feed,
                        safety_poll_seconds=self._safety_poll_seconds,
                    ),
                )
        return clients

    def _token_source_for_entra(self) -> EntraTokenSource | None:
        if self.settings.auth != "entra":
            return None
        if self._token_source is None:
            self._token_source = EntraTokenSource(
                self._credential, username=self.settings.username, refresh_margin_seconds=self._token_refresh_margin
            )
        return self._token_source

    def _turn(
        self,
        conversation_id: str,
        correlation_id: str,
        agent: str | None,
        *,
        trace_context: otel_context.Context | None = None,
        accepted_at_ms: int | None = None,
    ) -> TurnWriter:
        writer = self._turns.get((conversation_id, correlation_id))
        if writer is None:
            # The ids are checked once, when the turn's first entry arrives, not for every chunk.
            key = stream_key(conversation_id)
            validate_id(correlation_id, "correlation_id")
            self._forget_abandoned_turns()
            telemetry = TurnTelemetry(
                conversation_id=conversation_id,
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
                retry_seconds=self._write_retry_seconds,
                end_retry_seconds=self.settings.stream_ttl_seconds,
            )
            self._turns[(conversation_id, correlation_id)] = writer
        return writer

    def _forget_abandoned_turns(self) -> None:
        # A turn whose producer died never gets its done or error: drop its writer (and the text it
        # remembers) once the turn has been quiet for as long as its stream lives.
        now = time.monotonic()
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        cutoff = now - self.settings.stream_ttl_seconds
        for turn, writer in list(self._turns.items()):
            if writer.is_idle and writer.last_activity < cutoff:
                del self._turns[turn]
                writer.telemetry.ended("abandoned", written=False)

    async def _end(
        self,
        conversation_id: str,
        correlation_id: str,
        agent: str | None,
        *,
        final_text: str | None,
        error: str | None,
        cancelled: bool,
    ) -> None:
        writer = self._turn(conversation_id, correlation_id, agent)
        writer.end(final_text=final_text, error=error, cancelled=cancelled)
        # The turn is over for the agent; its writer lives on until the end is in Valkey.
        del self._turns[(conversation_id, correlation_id)]
        self._cancellations.pop((writer.key, correlation_id), None)
        flusher = writer.flusher
        if flusher is not None and not flusher.done():
            self._ending.add(writer)
            flusher.add_done_callback(lambda _: self._ending.discard(writer))
        # Usually the end is written within a round trip; during an outage the agent does not wait
        # for it: the writer retries it in the background.
        await wait_briefly(flusher, self._write_retry_seconds)

    async def _write_batch(self, key: str, correlation_id: str, entries: Sequence[Fields]) -> None:
        client = await self._clients().writer()
        notify = self._notify_readers
        # A watched turn (see watch_cancellation) asks whether it was cancelled in its batch, at most
        # every CANCEL_CHECK_SECONDS: a fast stream does not pay for a question per round trip.
        watch = self._cancellations.get((key, correlation_id))
        check = cancel_key(key) if watch is not None and watch.check_due() else None
        try:
            replies = await client.exec(
                self._entries_batch(key, correlation_id, entries, notify=notify, cancel_check=check),
                raise_on_error=True,
            )
        except RequestError as error:
            if not (notify and is_pubsub_refusal(error)):
                raise
            # The server refused the batch at its notification, before running any of it: write the
            # entries again without one. Readers elsewhere then poll (their feeds are refused too).
            if self._notify_readers:
                self._notify_readers = False
                logger.warning("Valkey refuses pub/sub notifications (%s): writes no longer publish them", error)
            replies = await client.exec(
                self._entries_batch(key, correlation_id, entries, notify=False, cancel_check=check),
                raise_on_error=True,
            )
        if watch is not None and check is not None and replies:
            # The batch's replies: one per entry, the EXPIRE's, then the cancel check's.
            watch.checked(bool(replies[len(entries) + 1]))

    def _entries_batch(
        self, key: str, correlation_id: str, entries: Sequence[Fields], *, notify: bool, cancel_check: str | None
    ) -> Batch | ClusterBatch:
        batch: Batch | ClusterBatch = ClusterBatch(is_atomic=True) if self.settings.cluster else Batch(is_atomic=True)
        options = StreamAddOptions(trim=self._trim)
        for entry in entries:
            batch.xadd(key, entry, options)
        # The TTL refresh rides in the same atomic batch: a stream never outlives its TTL unrefreshed.
        batch.expire(key, self.settings.stream_ttl_seconds)
        # So does the question "was this turn cancelled?" (the set is in the stream's slot).
        if cancel_check is not None:
            batch.sismember(cancel_check, correlation_id)
        if notify:
            # Wakes the live feeds that follow the stream once the entries are there to read; the
            # channel is the key, so in a cluster it is on the key's slot and the batch on one node.
            add_notification(batch, key)
        return batch

    async def _entries_after(self, key: str, position: str) -> AsyncIterator[tuple[str, StreamChunk | None]]:
        """Every entry now in the stream after ``position``, page by page, with its chunk (``None`` if malformed)."""
        if position == LAST_POSSIBLE_ENTRY_ID:
            return  # nothing can follow it (and Valkey refuses an exclusive range from it)
        while True:
            page = await self._range(key, position, _CATCH_UP_PAGE)
            for entry_id, fields in page:
                position = entry_id
                yield entry_id, self._parse(entry_id, fields)
            if len(page) < _CATCH_UP_PAGE:
                return

    async def _entries_back(self, key: str, at: str, count: int) -> list[tuple[str, StreamChunk | None]]:
        """Up to ``count`` entries at or before ``at``, newest first."""
        async with self._valkey() as client:
            reply = await client.xrevrange(key, IdBound(at), MinId(), count=count)
        return [(_text(entry_id), self._parse(_text(entry_id), fields)) for entry_id, fields in (reply or {}).items()]

    async def _range(self, key: str, after: str, count: int) -> list[tuple[str, Any]]:
        async with self._valkey() as client:
            reply = await client.xrange(key, ExclusiveIdBound(after), MaxId(), count=count)
        return [(_text(entry_id), fields) for entry_id, fields in (reply or {}).items()]

    async def _turn_trace_headers(self, conversation_id: str, correlation_id: str) -> Mapping[str, str] | None:
        accepted = await self.accepted_turn(conversation_id, correlation_id)
        return accepted.trace_headers if accepted is not None else None

    def _parse(self, entry_id: str, fields: Any) -> StreamChunk | None:
        try:
            pairs = fields.items() if isinstance(fields, Mapping) else fields
            decoded = {_text(name): _text(value) for name, value in pairs}
            return StreamChunk.from_entry(entry_id, decoded)
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            self.malformed_entries += 1
            logger.warning("Skipped malformed stream entry %s: %s", entry_id, error)
            return None


def _accepted_turn(raw: bytes | str) -> AcceptedTurn | None:
    try:
        record = json.loads(_text(raw))
        message, trace = record.get("message"), record.get("trace")
        return AcceptedTurn(
            agent=str(record["agent"]),
            accepted_at_ms=int(record["accepted_at_ms"]),
            message=message if isinstance(message, str) else None,
            trace_headers={str(k): str(v) for k, v in trace.items()} if isinstance(trace, dict) else {},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("Ignored a malformed accepted-turn record")
        return None


def _live_feed_for(mode: str, *, cluster: bool) -> LiveFeedMode:
    if mode == "auto":
        return "notifications" if cluster else "blocking"
    if mode == "notifications":
        return "notifications"
    if mode == "blocking":
        if cluster:
            raise ValueError("live_feed='blocking' needs a standalone server: a blocking XREAD cannot span slots")
        return "blocking"
    if mode == "polling":
        if not cluster:
            raise ValueError("live_feed='polling' is for a cluster: a standalone server takes one blocking read")
        return "polling"
    raise ValueError(f"live_feed must be 'auto', 'blocking', 'polling' or 'notifications', got {mode!r}")


def _session_of(context: AgentCallbackContext) -> str:
    if not context.session_id:
        raise ValueError("the callback context has no session_id")
    return context.session_id


def _reader_start(conversation_id: str, cursor: str | None, correlation_id: str | None) -> tuple[str, str]:
    # Validate everything a reader was given before it touches Valkey: (stream key, position).
    key = stream_key(conversation_id)
    if correlation_id is not None:
        validate_id(correlation_id, "correlation_id")
    return key, parse_cursor(cursor) or "0-0"


def _wanted(chunk: StreamChunk, correlation_id: str | None) -> bool:
    return correlation_id is None or chunk.correlation_id == correlation_id


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
