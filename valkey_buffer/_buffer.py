"""ValkeyStreamBuffer: the agents' response callback and the readers of their streams.

A facade: each concern lives in a module of its own (``_writers`` and ``_coalesced_appends``,
``_accepted_turns``, ``_cancel_requests``, ``_session_events``, ``_stream_reads``, ``_stream_reader``
and ``_session_reader``, ``_live_feed``, ``_loop_clients``); this class wires them together and is the
one public surface, which is why it is long: most of its lines are the public methods'
documentation, each method a line or two of delegation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context

from ._accepted_turns import AcceptedTurn, AcceptedTurns
from ._cancel_requests import CancelRequests
from ._cancel_watch import CancelWatch
from ._chunk import StreamChunk
from ._connection import GlideAnyClient, TokenCredential
from ._errors import InvalidCursorError
from ._glide import unavailable_on_glide_error
from ._ids import entry_order, parse_cursor, stream_key
from ._live_feed import ReaderStats
from ._loop_clients import ClientsPerLoop, live_feed_mode
from ._notifications import PubSubSupport
from ._session_events import SessionEvents
from ._session_reader import QuietHook, SessionEnd, SessionReader
from ._settings import ValkeySettings
from ._stream_reader import SequenceFilter
from ._stream_reads import StreamReads, reader_start
from ._telemetry import ReaderTelemetry
from ._tool_contents import result_text
from ._turn_outcome import CommittedTurnLookup
from ._writers import TurnWriters

if TYPE_CHECKING:
    from agent_framework import AgentResponse, AgentResponseUpdate
    from agent_framework_durabletask import AgentCallbackContext

logger = logging.getLogger("valkey_buffer")


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
        write_retry_seconds: How long the callback waits for a turn's end to be written while Valkey
            answers (while writes fail it returns at once), and how long :meth:`aclose` waits for
            unwritten entries. Entries Valkey has not confirmed are never dropped for a failed write:
            they are retried in the background for as long as the stream would live.
        max_held_bytes: The memory the process's writers may hold in entries Valkey has not
            confirmed (during an outage): past it, a turn gives up its oldest queued entries and
            its end carries the committed text (``replace``). 128 MiB by default.
        token_refresh_margin_seconds: With Entra ID, renew tokens this long before they expire.
        live_feed: How live readers learn of new entries. ``auto`` (the default): one blocking
            multi-key read on a standalone server (``blocking``), sharded pub/sub notifications in
            a cluster (``notifications``: every write batch publishes one, and a server that
            refuses pub/sub makes the feed poll). ``polling``: a cluster feed that polls every
            followed stream 5-50 ms apart and writes that publish nothing. ``notifications`` on a
            standalone server uses plain pub/sub.
        safety_poll_seconds: With notifications, how often every followed stream is read without
            one (a lost notification costs at most this long); the only Valkey traffic of idle readers.
        is_cancelled_response: Tells whether an agent's final response is that of a cancelled turn
            (how an app marks it is its own: e.g. ``travel_agents.is_cancelled_response``); its
            stream then ends with ``done`` plus ``cancelled="true"``. Default: never cancelled.

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
        max_held_bytes: int = 128 * 1024 * 1024,
        token_refresh_margin_seconds: float = 300.0,
        live_feed: Literal["auto", "blocking", "polling", "notifications"] = "auto",
        safety_poll_seconds: float = 5.0,
        is_cancelled_response: Callable[[AgentResponse], bool] | None = None,
    ) -> None:
        self.settings = settings or ValkeySettings.from_env()
        pubsub = PubSubSupport(wanted=live_feed_mode(live_feed, cluster=self.settings.cluster) == "notifications")
        self._is_cancelled_response = is_cancelled_response
        self._reads = StreamReads(self.valkey)
        self._loops = ClientsPerLoop(
            self.settings,
            credential=credential,
            token_refresh_margin_seconds=token_refresh_margin_seconds,
            parse=self._reads.parse,
            pubsub=pubsub,
            safety_poll_seconds=safety_poll_seconds,
        )
        self._accepted = AcceptedTurns(self.settings, self.valkey)
        self._cancels = CancelRequests(self.settings, self.valkey)
        self._writers = TurnWriters(
            self.settings,
            self._writer_client,
            self._cancels,
            pubsub,
            max_pending_chunks=max_pending_chunks,
            max_batch=max_batch,
            write_retry_seconds=write_retry_seconds,
            max_held_bytes=max_held_bytes,
        )
        self.stats = self._writers.stats
        self._events = SessionEvents(
            self.valkey,
            ttl_seconds=self.settings.stream_ttl_seconds,
            maxlen=self.settings.stream_maxlen,
            notify=lambda: ("s" if self.settings.cluster else "p") if pubsub.writes_publish else "",
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> ValkeyStreamBuffer:
        """Create a buffer from ``VALKEY_*`` environment variables (see ``ValkeySettings.from_env``)."""
        return cls(ValkeySettings.from_env(), **kwargs)

    @property
    def malformed_entries(self) -> int:
        """Stream entries readers skipped because they could not be parsed."""
        return self._reads.malformed_entries

    # ----- the callback protocol (agent_framework_durabletask.AgentResponseCallbackProtocol) -----

    async def on_streaming_response_update(self, update: AgentResponseUpdate, context: AgentCallbackContext) -> None:
        """Queue one streamed update's text and tool activity; returns at once unless the turn's queue is full.

        Function-call contents become ``tool_call`` entries and function-result contents
        ``tool_result`` entries, in the order the update holds them. A model streams a call's
        arguments in pieces (the first piece names the call, later ones may carry no id): the pieces
        are joined and the call is written once something else of the turn follows it. Never raises.
        """
        contents = update.contents or []
        if not any(content.type in ("function_call", "function_result") for content in contents):
            text = update.text
            if not text:
                return
            try:
                await self.write_chunk(
                    _session_of(context), text, correlation_id=context.correlation_id, agent=context.agent_name
                )
            except Exception:
                logger.exception("Could not queue a streamed chunk for %s", context.session_id)
            return
        try:
            writer = self._writers.turn(_session_of(context), context.correlation_id, context.agent_name)
            for content in contents:
                if content.type == "function_call":
                    writer.note_call_piece(content.call_id or "", content.name or "", content.arguments)
                elif content.type == "function_result":
                    await writer.add_tool_result(content.call_id or "", result_text(content))
                elif content.type == "text" and content.text:
                    await writer.add(content.text)
        except Exception:
            logger.exception("Could not queue a streamed update for %s", context.session_id)

    async def on_agent_response(self, response: AgentResponse, context: AgentCallbackContext) -> None:
        """End the turn with its final text: what the stream lacks of it, then ``done``. Never raises.

        When the streamed chunks are a prefix of the final text (the usual case) the remainder is
        appended; when they are not (the framework fell back to a non-streaming run after the
        stream failed) or the stream may lack some (entries given up on, or lost by Valkey), a
        ``replace`` entry carries the full text. A
        response that ``is_cancelled_response`` recognises ends with ``done`` plus ``cancelled="true"``.
        """
        try:
            cancelled = self._is_cancelled_response is not None and self._is_cancelled_response(response)
            await self.write_completion(
                _session_of(context),
                correlation_id=context.correlation_id,
                agent=context.agent_name,
                final_text=response.text or "",
                cancelled=cancelled,
            )
        except Exception:
            logger.exception("Could not complete the stream of %s", context.session_id)

    # ----- writes (see TurnWriters) -----

    async def write_chunk(self, session_id: str, text: str, *, correlation_id: str, agent: str | None = None) -> None:
        """Queue a text chunk of a turn; it is written in order with the turn's other entries.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        await self._writers.turn(session_id, correlation_id, agent).add(text)

    async def write_completion(
        self,
        session_id: str,
        *,
        correlation_id: str,
        agent: str | None = None,
        final_text: str | None = None,
        cancelled: bool = False,
    ) -> None:
        """End the turn with ``done`` after all its queued chunks.

        Returns once the end is written, after ``write_retry_seconds``, or at once while writes
        fail: the end is then retried in the background for as long as the stream lives. What the
        chunks lack of ``final_text`` is appended, or it replaces them (a ``replace`` entry) when
        they are not its prefix or the stream may lack some of them. ``cancelled`` marks the
        ``done`` entry (``cancelled="true"``).

        Raises:
            InvalidIdError: If an id is invalid.
        """
        await self._writers.end(
            session_id, correlation_id, agent, final_text=final_text, error=None, cancelled=cancelled
        )

    async def write_error(
        self, session_id: str, message: str, *, correlation_id: str, agent: str | None = None
    ) -> None:
        """End the turn with an ``error`` entry after all its queued chunks (see ``write_completion``).

        Raises:
            InvalidIdError: If an id is invalid.
        """
        await self._writers.end(
            session_id, correlation_id, agent, final_text=None, error=message or "error", cancelled=False
        )

    def begin_turn(
        self,
        session_id: str,
        correlation_id: str,
        *,
        agent: str | None = None,
        trace_context: otel_context.Context | None = None,
        accepted_at_ms: int | None = None,
    ) -> None:
        """Say where a turn's telemetry belongs, before its first chunk (optional; on the agent's loop).

        The turn's ``agent_stream.write`` span joins ``trace_context`` (the accepting request's
        trace) and ``agent_stream.turn.time_to_first_chunk`` counts from ``accepted_at_ms``. A turn
        that has begun already is left as it is.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        self._writers.turn(
            session_id, correlation_id, agent, trace_context=trace_context, accepted_at_ms=accepted_at_ms
        )

    async def flush_turn(self, session_id: str, correlation_id: str) -> None:
        """Wait until a running turn's queued entries are written (or given up on)."""
        await self._writers.flush(session_id, correlation_id)

    def open_turns(self) -> set[tuple[str, str]]:
        """The turns this buffer writes now (begun, not ended), as ``(session_id, correlation_id)``."""
        return self._writers.open_turns()

    # ----- accepted turns (see AcceptedTurns) and cancel requests (see CancelRequests) -----

    async def record_turn_accepted(
        self,
        session_id: str,
        correlation_id: str,
        agent: str,
        *,
        message: str | None = None,
        accepted_at_ms: int | None = None,
    ) -> AcceptedTurn:
        """Record that a turn was accepted (and its message, and the current trace), as long as its stream lives.

        :meth:`accepted_turn` then tells "accepted, not started yet" from "never accepted".

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        return await self._accepted.record(
            session_id, correlation_id, agent, message=message, accepted_at_ms=accepted_at_ms
        )

    async def accepted_turn(self, session_id: str, correlation_id: str) -> AcceptedTurn | None:
        """The record of an accepted turn, ``None`` if there is none (raises like ``record_turn_accepted``)."""
        return await self._accepted.lookup(session_id, correlation_id)

    async def accepted_turns(self, session_id: str) -> dict[str, AcceptedTurn]:
        """Every accepted turn of a session still within the stream's TTL, by correlation id."""
        return await self._accepted.of_session(session_id)

    async def request_cancel(self, session_id: str, correlation_id: str) -> None:
        """Ask the instance that runs a turn to stop it (it learns within a chunk or a fraction of a second).

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached (nothing was requested).
        """
        await self._cancels.request(session_id, correlation_id)

    async def is_cancel_requested(self, session_id: str, correlation_id: str) -> bool:
        """Whether a cancel was requested for a turn (raises like ``request_cancel``)."""
        return await self._cancels.is_requested(session_id, correlation_id)

    def watch_cancellation(self, session_id: str, correlation_id: str) -> CancelWatch:
        """The cancellation of a running turn, to enter around the agent's run; its write batches ask for it.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        return self._cancels.watch(session_id, correlation_id)

    # ----- session events and whole-session readers (see SessionEvents, SessionReader) -----

    async def append_event_once(
        self,
        session_id: str,
        event_id: str,
        event: str,
        data: dict[str, object] | None = None,
        *,
        correlation_id: str | None = None,
        agent: str | None = None,
    ) -> str | None:
        """Append a session event (``event`` plus a JSON ``data`` object) unless ``event_id`` was appended before.

        Returns:
            The new entry's id, or ``None`` when the event was in the stream already.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        return await self._events.append_once(
            session_id, event_id, event, data, correlation_id=correlation_id, agent=agent
        )

    async def read_session(
        self,
        session_id: str,
        cursor: str | None = None,
        *,
        ends: SessionEnd,
        on_quiet: QuietHook | None = None,
        quiet_seconds: float = 0.5,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Yield every turn's entries of a session after ``cursor``, each once, live, until one ``ends`` it.

        While the stream is quiet, ``on_quiet`` is awaited every ``quiet_seconds``: it may append the
        missing end (``append_event_once``) and answers whether the producer is alive; the reader
        gives up with an ``error`` chunk (no entry id) after ``idle_timeout`` without entries while
        it is not (``settings.read_idle_timeout_seconds`` by default).

        Raises:
            InvalidIdError: If the id is invalid.
            InvalidCursorError: If the cursor is not an entry id.
            ValkeyUnavailableError: If Valkey cannot be reached before the first entry.
        """
        key, position = reader_start(session_id, cursor, None)
        reader = SessionReader(
            key=key,
            position=position,
            ends=ends,
            feed=self._loops.current().feed(),
            read_after=lambda after: self._reads.entries_after(key, after),
            read_back=lambda at: self._reads.look_back(key, at),
            idle_timeout=self.settings.read_idle_timeout_seconds if idle_timeout is None else idle_timeout,
            quiet_seconds=quiet_seconds,
            on_quiet=on_quiet,
        )
        async with contextlib.aclosing(reader.chunks()) as chunks:
            async for chunk in chunks:
                yield chunk

    async def session_entries(self, session_id: str) -> list[StreamChunk]:
        """Every entry of a session's stream now, each once, across all its turns (no waiting).

        Raises:
            InvalidIdError: If the id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = stream_key(session_id)
        sequences = SequenceFilter()
        return [
            shown
            async for _, entry in self._reads.entries_after(key, "0-0")
            if entry is not None
            for shown in sequences.admit(entry)
        ]

    # ----- readers -----

    def read_stream(
        self,
        session_id: str,
        cursor: str | None = None,
        *,
        correlation_id: str | None = None,
        idle_timeout: float | None = None,
        committed_turn: CommittedTurnLookup | None = None,
        resumed: bool | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Yield a stream's entries after ``cursor``, each once, then follow new ones live (see ``StreamReader``).

        It ends after the terminal entry of the turn ``correlation_id`` names (or, without one, of
        the first turn it meets). With ``committed_turn``, a turn whose stream goes quiet for
        ``settings.read_reconcile_seconds`` ends with its committed outcome (a ``replace`` chunk and
        ``done`` or an ``error``, without entry ids). Nothing at all for ``idle_timeout`` seconds
        ends it with an ``error`` chunk without an entry id; a Valkey outage after the first entry
        does not: it reads on when Valkey is back.

        Args:
            session_id: The session to read.
            cursor: The last entry id the reader has (exclusive); ``None`` or ``0`` for the start.
            correlation_id: Follow this turn only.
            idle_timeout: Seconds to wait for an entry; ``settings.read_idle_timeout_seconds`` by default.
            committed_turn: Looks up a turn's committed outcome (the source of truth).
            resumed: Whether the read resumes a cut read (``agent_stream.resumes``); by default,
                whether a cursor was given.

        Raises:
            InvalidIdError: If an id is invalid.
            InvalidCursorError: If the cursor is not an entry id.
            ValkeyUnavailableError: If Valkey cannot be reached before the first entry.
        """
        # The reader's span joins the trace current now (the HTTP request that reads), not the one
        # current when the response body is iterated.
        telemetry = ReaderTelemetry(
            session_id=session_id,
            correlation_id=correlation_id,
            resumed=cursor is not None if resumed is None else resumed,
            parent=otel_context.get_current(),
            turn_trace=lambda turn: self._accepted.trace_headers(session_id, turn),
        )
        return self._reads.follow(
            session_id,
            cursor,
            correlation_id=correlation_id,
            feed=self._loops.current().feed(),
            idle_timeout=self.settings.read_idle_timeout_seconds if idle_timeout is None else idle_timeout,
            reconcile_after=self.settings.read_reconcile_seconds,
            committed_turn=committed_turn,
            telemetry=telemetry,
        )

    async def read_available(
        self, session_id: str, cursor: str | None = None, *, correlation_id: str | None = None, count: int | None = None
    ) -> list[StreamChunk]:
        """Return the entries written so far after ``cursor`` (at most ``count``), without waiting for new ones.

        For clients that poll instead of holding a connection. Stops after the followed turn's
        terminal entry, like ``read_stream``, and drops repeated entries the same way.

        Raises:
            InvalidIdError: If an id is invalid.
            InvalidCursorError: If the cursor is not an entry id.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        return await self._reads.available(session_id, cursor, correlation_id=correlation_id, count=count)

    async def latest_entry_id(self, session_id: str) -> str:
        """The id of the stream's newest entry (``0-0`` if none): follow a new turn from there, past the history.

        Raises:
            InvalidIdError: If the id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        return await self._reads.latest_entry_id(stream_key(session_id))

    async def check_cursor(self, session_id: str, cursor: str | None) -> None:
        """Refuse a cursor after the stream's newest entry; an empty or absent stream (expired?) accepts any.

        Raises:
            InvalidIdError: If the id is invalid.
            InvalidCursorError: If the cursor is malformed or after the newest entry.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        position = parse_cursor(cursor)
        latest = await self.latest_entry_id(session_id)
        if position is not None and latest != "0-0" and entry_order(position) > entry_order(latest):
            raise InvalidCursorError(f"cursor {position} is after the stream's newest entry {latest}")

    def reader_stats(self) -> ReaderStats:
        """The live readers of the running event loop: how many, and what they hold in memory."""
        return self._loops.current().feed().stats()

    # ----- connections -----

    @contextlib.asynccontextmanager
    async def valkey(self) -> AsyncIterator[GlideAnyClient]:
        """The running loop's client for short commands (never blocking: writes share it).

        For code that keeps a little state of its own next to the streams (e.g. stream tokens'
        signing keys). A GLIDE error inside becomes ``ValkeyUnavailableError``.
        """
        with unavailable_on_glide_error(self.settings.address):
            yield await self._writer_client()

    @property
    def connected_loops(self) -> int:
        """How many event loops have clients of this buffer now (each loop gets its own)."""
        return len(self._loops)

    async def ping(self) -> bool:
        """Whether Valkey answers now (for health checks); never raises."""
        try:
            client = await self._writer_client()
            await asyncio.wait_for(client.ping(), timeout=self.settings.request_timeout_ms / 1000 + 1)
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Write out queued entries of this event loop and close every client. Idempotent.

        Entries still being retried are given ``write_retry_seconds`` more, then abandoned (counted
        as dropped).
        """
        await self._writers.flush_loop()
        await self._loops.aclose()

    async def _writer_client(self) -> GlideAnyClient:
        return await self._loops.current().writer()


def _session_of(context: AgentCallbackContext) -> str:
    if not context.session_id:
        raise ValueError("the callback context has no session_id")
    return context.session_id
