"""Reading a stream from Valkey: ranges after a position, the look-back before a cursor, parsing.

Every reader (the live :class:`StreamReader` and the one-shot ``read_available``) goes through the
same few reads, so that paging, the look-back and the handling of malformed entries are the same
for all of them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from glide import ExclusiveIdBound, IdBound, MaxId, MinId

from ._chunk import StreamChunk, message_from_pairs
from ._glide import ClientScope, text
from ._ids import LAST_POSSIBLE_ENTRY_ID, parse_cursor, stream_key, validate_id
from ._live_feed import LiveFeed
from ._stream_reader import SequenceFilter, StreamReader
from ._telemetry import ReaderTelemetry
from ._turn_outcome import CommittedTurnLookup

logger = logging.getLogger("valkey_buffer")

# Entries read per round trip while catching up.
_CATCH_UP_PAGE = 512
# Entries read just before a cursor to learn which sequences the reader has passed: more than a
# retried write can repeat, few enough for one round trip.
LOOK_BACK = 64

Entry = tuple[str, StreamChunk | None]


class StreamReads:
    """The non-blocking reads of streams, on the running loop's client.

    Attributes:
        malformed_entries: Entries skipped because they could not be parsed.

    Args:
        valkey: Opens the running loop's client with errors translated.
    """

    def __init__(self, valkey: ClientScope) -> None:
        self._valkey = valkey
        self.malformed_entries = 0

    def parse(self, entry_id: str, fields: Any) -> StreamChunk | None:
        """An entry's chunk; ``None`` (logged and counted) when it is malformed."""
        try:
            # GLIDE answers a list of [name, value] pairs of bytes: decoded directly, as this runs once
            # per entry for all readers; anything else goes the general way.
            if isinstance(fields, list):
                # A try rather than contextlib.suppress: no context manager made per entry read.
                try:
                    message = message_from_pairs(entry_id, fields)
                except (TypeError, AttributeError):  # not pairs of bytes
                    message = None
                if message is not None:
                    return message
                try:
                    decoded = {name.decode(): value.decode() for name, value in fields}
                except AttributeError:
                    decoded = {text(name): text(value) for name, value in fields}
            else:
                pairs = fields.items() if isinstance(fields, Mapping) else fields
                decoded = {text(name): text(value) for name, value in pairs}
            return StreamChunk.from_entry(entry_id, decoded)
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            self.malformed_entries += 1
            logger.warning("Skipped malformed stream entry %s: %s", entry_id, error)
            return None

    async def entries_after(self, key: str, position: str) -> AsyncIterator[Entry]:
        """Every entry now in the stream after ``position``, page by page, with its chunk (``None`` if malformed)."""
        if position == LAST_POSSIBLE_ENTRY_ID:
            return  # nothing can follow it (and Valkey refuses an exclusive range from it)
        while True:
            async with self._valkey() as client:
                reply = await client.xrange(key, ExclusiveIdBound(position), MaxId(), count=_CATCH_UP_PAGE)
            page = [(text(entry_id), fields) for entry_id, fields in (reply or {}).items()]
            for entry_id, fields in page:
                position = entry_id
                yield entry_id, self.parse(entry_id, fields)
            if len(page) < _CATCH_UP_PAGE:
                return

    async def look_back(self, key: str, at: str) -> list[Entry]:
        """The ``LOOK_BACK`` entries at or before a cursor, newest first: what a resuming reader has passed."""
        async with self._valkey() as client:
            reply = await client.xrevrange(key, IdBound(at), MinId(), count=LOOK_BACK)
        return [(text(entry_id), self.parse(text(entry_id), fields)) for entry_id, fields in (reply or {}).items()]

    async def latest_entry_id(self, key: str) -> str:
        """The id of the stream's newest entry, ``0-0`` when the stream is empty or absent."""
        async with self._valkey() as client:
            reply = await client.xrevrange(key, MaxId(), MinId(), count=1)
        return next((text(entry_id) for entry_id in (reply or {})), "0-0")

    async def follow(
        self,
        session_id: str,
        cursor: str | None,
        *,
        correlation_id: str | None,
        feed: LiveFeed,
        idle_timeout: float,
        reconcile_after: float,
        committed_turn: CommittedTurnLookup | None,
        telemetry: ReaderTelemetry,
    ) -> AsyncIterator[StreamChunk]:
        """A stream's entries after ``cursor``, then live ones (see ``ValkeyStreamBuffer.read_stream``)."""
        key, position = reader_start(session_id, cursor, correlation_id)
        reader = StreamReader(
            key=key,
            position=position,
            correlation_id=correlation_id,
            feed=feed,
            read_after=lambda after: self.entries_after(key, after),
            read_back=lambda at: self.look_back(key, at),
            idle_timeout=idle_timeout,
            reconcile_after=reconcile_after,
            committed_turn=committed_turn,
            telemetry=telemetry,
        )
        async with contextlib.aclosing(reader.chunks()) as chunks:
            async for chunk in chunks:
                yield chunk

    async def available(
        self, session_id: str, cursor: str | None, *, correlation_id: str | None, count: int | None
    ) -> list[StreamChunk]:
        """The entries written so far after ``cursor`` (see ``ValkeyStreamBuffer.read_available``)."""
        key, position = reader_start(session_id, cursor, correlation_id)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        sequences = SequenceFilter()
        if position != "0-0":
            for _, before in await self.look_back(key, position):
                if before is not None:
                    sequences.learn(before)
        chunks: list[StreamChunk] = []
        async for _, entry in self.entries_after(key, position):
            if entry is None or not (correlation_id is None or entry.correlation_id == correlation_id):
                continue
            for chunk in sequences.admit(entry):
                chunks.append(chunk)
                if chunk.is_terminal or (count is not None and len(chunks) >= count):
                    return chunks
        return chunks


def reader_start(session_id: str, cursor: str | None, correlation_id: str | None) -> tuple[str, str]:
    """Validate what a reader was given, before it touches Valkey: (stream key, position)."""
    key = stream_key(session_id)
    if correlation_id is not None:
        validate_id(correlation_id, "correlation_id")
    return key, parse_cursor(cursor) or "0-0"
