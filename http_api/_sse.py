"""Server-Sent Events framing for stream chunks."""

from __future__ import annotations

import json

from valkey_buffer import StreamChunk


def encode_sse_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,  # named after the SSE field
    retry_ms: int | None = None,
) -> str:
    """Encode one SSE event.

    Text with line breaks becomes one ``data:`` line per line, so the browser's ``EventSource``
    joins them back with ``\\n``.

    Args:
        data: The event payload.
        event: The event type; ``None`` for the default ``message``.
        id: The event id that the client sends back as ``Last-Event-ID``.
        retry_ms: The reconnect delay the client should use.

    Returns:
        The event, terminated by a blank line.
    """
    lines: list[str] = []
    if retry_ms is not None:
        lines.append(f"retry: {int(retry_ms)}")
    if id is not None:
        lines.append(f"id: {_single_line(id)}")
    if event is not None:
        lines.append(f"event: {_single_line(event)}")
    lines.extend(f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(lines) + "\n\n"


def encode_sse_comment(text: str = "keep-alive") -> str:
    """Encode an SSE comment line: a heartbeat that keeps idle connections open."""
    return f": {_single_line(text)}\n\n"


def chunk_to_sse(chunk: StreamChunk) -> str:
    """Encode a stream chunk as an SSE event whose id is the chunk's entry id."""
    event_id = chunk.entry_id or None
    if chunk.kind == "error":
        return encode_sse_event(chunk.error or "error", event="error", id=event_id)
    if chunk.kind in ("done", "cancelled"):
        return encode_sse_event("", event=chunk.kind, id=event_id)
    if chunk.kind == "replace":
        return encode_sse_event(chunk.text, event="replace", id=event_id)
    if chunk.kind == "event":
        # A session event (e.g. a workflow step's start): its JSON data, under its own name.
        return encode_sse_event(chunk.data or "{}", event=chunk.event or "event", id=event_id)
    if chunk.kind in ("tool_call", "tool_result"):
        return encode_sse_event(json.dumps(chunk.tool_json(), ensure_ascii=False), event=chunk.kind, id=event_id)
    return encode_sse_event(chunk.text, event="message", id=event_id)


def _single_line(value: str) -> str:
    # A line break inside a field would end it early and could smuggle another field in.
    return value.replace("\r", " ").replace("\n", " ")
