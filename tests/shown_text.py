"""What a reader of a stream shows: the one rule every test that checks streamed text relies on."""

from __future__ import annotations

from collections.abc import Iterable

from httpx_sse import ServerSentEvent

from valkey_buffer import StreamChunk


def shown_text(events: Iterable[tuple[str, str]]) -> str:
    """Fold ``(kind, text)`` pairs: ``message`` text is appended, a ``replace`` replaces all so far."""
    shown = ""
    for kind, text in events:
        if kind == "message":
            shown += text
        elif kind == "replace":
            shown = text
    return shown


def chunks_text(chunks: Iterable[StreamChunk]) -> str:
    """The text a reader of these buffer chunks shows."""
    return shown_text((chunk.kind, chunk.text) for chunk in chunks)


def sse_text(events: Iterable[ServerSentEvent]) -> str:
    """The text a reader of these SSE events shows."""
    return shown_text((event.event, event.data) for event in events)
