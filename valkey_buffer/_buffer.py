"""ValkeyStreamBuffer: the agents' response callback and the readers of their streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from glide import Batch, ClusterBatch, ExclusiveIdBound, GlideError, MaxId, MinId, StreamAddOptions, TrimByMaxLen

from ._chunk import StreamChunk
from ._connection import EntraTokenSource, TokenCredential
from ._errors import ValkeyUnavailableError
from ._ids import parse_cursor, stream_key, validate_id
from ._loop_clients import LoopClients
from ._settings import ValkeySettings
from ._turn_writer import Fields, TurnWriter, WriteStats

if TYPE_CHECKING:
    from agent_framework import AgentResponse, AgentResponseUpdate
    from agent_framework_durabletask import AgentCallbackContext

logger = logging.getLogger("valkey_buffer")

_CATCH_UP_PAGE = 512


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
        write_retry_seconds: How long a failed batch is retried before it is dropped and counted.
        token_refresh_margin_seconds: With Entra ID, renew tokens this long before they expire.

    Raises:
        ValueError: If a number is out of range.
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
    ) -> None:
        if max_pending_chunks < 1:
            raise ValueError("max_pending_chunks must be at least 1")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if write_retry_seconds < 0:
            raise ValueError("write_retry_seconds must not be negative")
        self.settings = settings or ValkeySettings.from_env()
        self.stats = WriteStats()
        self.malformed_entries = 0
        self._credential = credential
        self._token_refresh_margin = token_refresh_margin_seconds
        self._token_source: EntraTokenSource | None = None
        self._max_pending = max_pending_chunks
        self._max_batch = max_batch
        self._write_retry_seconds = write_retry_seconds
        self._turns: dict[tuple[str, str], TurnWriter] = {}  # (conversation id, correlation id)
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
        """End the turn: write what the stream is missing of the final text, then ``done``.

        When the streamed chunks are a prefix of the final text (the usual case) the remainder is
        appended; otherwise (the framework fell back to a non-streaming run after the stream
        failed) a ``replace`` entry carries the full text. Never raises.
        """
        try:
            conversation_id = _session_of(context)
            writer = self._turn(conversation_id, context.correlation_id)
            streamed = "".join(writer.streamed_text)
            final = response.text or ""
            if final.startswith(streamed):
                if final[len(streamed) :]:
                    await self.write_chunk(
                        conversation_id,
                        final[len(streamed) :],
                        correlation_id=context.correlation_id,
                        agent=context.agent_name,
                    )
            else:
                await self._add(writer, {"text": final, "replace": "true"}, context.correlation_id, context.agent_name)
            await self.write_completion(
                conversation_id, correlation_id=context.correlation_id, agent=context.agent_name
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
        writer = self._turn(conversation_id, correlation_id)
        writer.streamed_text.append(text)
        await self._add(writer, {"text": text}, correlation_id, agent)

    async def write_completion(self, conversation_id: str, *, correlation_id: str, agent: str | None = None) -> None:
        """Write the turn's ``done`` entry after all its queued chunks; returns once all are written.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        await self._finish(conversation_id, correlation_id, {"text": "", "done": "true"}, agent)

    async def write_error(
        self, conversation_id: str, message: str, *, correlation_id: str, agent: str | None = None
    ) -> None:
        """Write the turn's ``error`` entry after all its queued chunks; returns once all are written.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        await self._finish(conversation_id, correlation_id, {"text": "", "error": message or "error"}, agent)

    # ----- readers -----

    async def read_stream(
        self,
        conversation_id: str,
        cursor: str | None = None,
        *,
        correlation_id: str | None = None,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Yield a stream's entries after ``cursor``, then follow new ones live.

        The iterator ends after the terminal entry (``done`` or ``error``) of the turn it follows:
        the turn ``correlation_id`` names (other turns' entries are skipped), or without one the
        first turn it meets. When nothing arrives for ``idle_timeout`` seconds it yields a chunk
        with ``kind="error"`` and an empty ``entry_id`` and ends.

        Args:
            conversation_id: The session to read.
            cursor: The last entry id the reader has (exclusive); ``None`` or ``0`` for the start.
            correlation_id: Follow this turn only.
            idle_timeout: Seconds to wait for an entry; ``settings.read_idle_timeout_seconds`` by default.

        Yields:
            The entries, in order, each once.

        Raises:
            InvalidIdError: If an id is invalid.
            InvalidCursorError: If the cursor is not an entry id.
            ValkeyUnavailableError: If Valkey cannot be reached before the first entry.
        """
        key, position = _reader_start(conversation_id, cursor, correlation_id)
        timeout = self.settings.read_idle_timeout_seconds if idle_timeout is None else idle_timeout
        clients = self._clients()

        # Catch up with non-blocking reads, then join the live feed from the last id read: the
        # feed delivers only ids after it, so the seam has neither a gap nor a duplicate.
        async for entry_id, chunk in self._entries_after(clients, key, position):
            position = entry_id
            if chunk is not None and _wanted(chunk, correlation_id):
                yield chunk
                if chunk.is_terminal:
                    return

        feed = clients.feed()
        subscription = feed.subscribe(key, position, timeout)
        try:
            while True:
                chunk = await subscription.next_chunk()
                # A synthetic error (no entry id: timeout, outage) ends every reader.
                if chunk is None or (chunk.entry_id and not _wanted(chunk, correlation_id)):
                    continue
                yield chunk
                if chunk.is_terminal:
                    return
        finally:
            feed.unsubscribe(subscription)

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
        terminal entry, like ``read_stream``.

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
        chunks: list[StreamChunk] = []
        async for _, chunk in self._entries_after(self._clients(), key, position):
            if chunk is None or not _wanted(chunk, correlation_id):
                continue
            chunks.append(chunk)
            if chunk.is_terminal or (count is not None and len(chunks) >= count):
                break
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
        try:
            client = await self._clients().writer()
            reply = await client.xrevrange(key, MaxId(), MinId(), count=1)
        except GlideError as error:
            raise ValkeyUnavailableError(f"Valkey at {self.settings.address} is unavailable: {error}") from error
        return next((_text(entry_id) for entry_id in (reply or {})), "0-0")

    async def ping(self) -> bool:
        """Whether Valkey answers now (for health checks); never raises."""
        try:
            client = await self._clients().writer()
            await asyncio.wait_for(client.ping(), timeout=self.settings.request_timeout_ms / 1000 + 1)
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Write out queued entries of this event loop and close every client. Idempotent."""
        current = asyncio.get_running_loop()
        for writer in list(self._turns.values()):
            if writer.loop is current:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), timeout=self._write_retry_seconds + 1)
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

    def _clients(self) -> LoopClients:
        loop = asyncio.get_running_loop()
        clients = self._loops.get(loop)
        if clients is None:
            with self._loops_lock:
                clients = self._loops.setdefault(
                    loop, LoopClients(self.settings, self._token_source_for_entra(), self._parse)
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

    def _turn(self, conversation_id: str, correlation_id: str) -> TurnWriter:
        writer = self._turns.get((conversation_id, correlation_id))
        if writer is None:
            # The ids are checked once, when the turn's first entry arrives, not for every chunk.
            key = stream_key(conversation_id)
            validate_id(correlation_id, "correlation_id")
            self._forget_abandoned_turns()
            writer = TurnWriter(
                key,
                self._write_batch,
                self.stats,
                max_pending=self._max_pending,
                max_batch=self._max_batch,
                retry_seconds=self._write_retry_seconds,
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

    async def _add(self, writer: TurnWriter, fields: dict[str, str], correlation_id: str, agent: str | None) -> None:
        entry: Fields = [
            ("text", fields.pop("text", "")),
            ("sequence", str(writer.next_sequence)),
            ("timestamp", str(int(time.time() * 1000))),
            *fields.items(),
            ("correlation_id", correlation_id),
        ]
        if agent:
            entry.append(("agent", agent))
        writer.next_sequence += 1
        await writer.add(entry)

    async def _finish(
        self, conversation_id: str, correlation_id: str, fields: dict[str, str], agent: str | None
    ) -> None:
        writer = self._turn(conversation_id, correlation_id)
        await self._add(writer, fields, correlation_id, agent)
        try:
            await writer.drain()
        finally:
            self._turns.pop((conversation_id, correlation_id), None)

    async def _write_batch(self, key: str, entries: Sequence[Fields]) -> None:
        clients = self._clients()
        client = await clients.writer()
        batch: Batch | ClusterBatch = ClusterBatch(is_atomic=True) if self.settings.cluster else Batch(is_atomic=True)
        options = StreamAddOptions(trim=self._trim)
        for entry in entries:
            batch.xadd(key, entry, options)
        # The TTL refresh rides in the same atomic batch: a stream never outlives its TTL unrefreshed.
        batch.expire(key, self.settings.stream_ttl_seconds)
        await client.exec(batch, raise_on_error=True)

    async def _entries_after(
        self, clients: LoopClients, key: str, position: str
    ) -> AsyncIterator[tuple[str, StreamChunk | None]]:
        """Every entry now in the stream after ``position``, page by page, with its chunk (``None`` if malformed)."""
        while True:
            page = await self._range(clients, key, position, _CATCH_UP_PAGE)
            for entry_id, fields in page:
                position = entry_id
                yield entry_id, self._parse(entry_id, fields)
            if len(page) < _CATCH_UP_PAGE:
                return

    async def _range(self, clients: LoopClients, key: str, after: str, count: int) -> list[tuple[str, Any]]:
        try:
            client = await clients.writer()
            reply = await client.xrange(key, ExclusiveIdBound(after), MaxId(), count=count)
        except GlideError as error:
            raise ValkeyUnavailableError(f"Valkey at {self.settings.address} is unavailable: {error}") from error
        return [(_text(entry_id), fields) for entry_id, fields in (reply or {}).items()]

    def _parse(self, entry_id: str, fields: Any) -> StreamChunk | None:
        try:
            pairs = fields.items() if isinstance(fields, Mapping) else fields
            decoded = {_text(name): _text(value) for name, value in pairs}
            return StreamChunk.from_entry(entry_id, decoded)
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            self.malformed_entries += 1
            logger.warning("Skipped malformed stream entry %s: %s", entry_id, error)
            return None


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
