"""Turning a buffer's chunk iterator into a streamed HTTP body: SSE or plain text.

Both bodies are async generators handed to a ``StreamingResponse``, so every chunk leaves as soon
as Valkey has it. While nothing arrives, SSE bodies send comment lines (heartbeats). A body ends at
the followed turn's terminal entry, or after the maximum duration with a ``retry:`` hint, after
which ``EventSource`` reconnects by itself and sends the last id it saw as ``Last-Event-ID``.
``DeadlineStreamingResponse`` enforces the time limit on the server even for a client that stopped
reading (whose body is then never asked for its next part).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ag_ui.core import BaseEvent
from azurefunctions.extensions.http.fastapi import StreamingResponse
from starlette.types import Receive, Scope, Send

from valkey_buffer import StreamChunk, ValkeyUnavailableError

from ._agui_events import encode_event
from ._settings import StreamSettings
from ._sse import chunk_to_sse, encode_sse_comment, encode_sse_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Heartbeat:
    pass


@dataclass(frozen=True)
class _TimeUp:
    pass


@dataclass(frozen=True)
class _Unavailable:
    message: str


_Paced = StreamChunk | _Heartbeat | _TimeUp | _Unavailable

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class DeadlineStreamingResponse(StreamingResponse):
    """A streaming response that ends after ``max_seconds`` whether or not its client reads.

    A client that stops reading leaves the server blocked in a write, where the body's own time
    limit is never checked: this one cuts the response there, and closes the body (and so the
    stream reader it holds).

    Args:
        content: The body (an async iterator of text).
        max_seconds: The longest the response may take, sending included.
        **kwargs: As for ``StreamingResponse``.
    """

    def __init__(self, content: AsyncIterator[str], *, max_seconds: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.max_seconds = max_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout(self.max_seconds):
                await super().__call__(scope, receive, send)
        except TimeoutError:
            logger.info("Cut a stream response after %g s: its client stopped reading", self.max_seconds)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


def stream_response(
    chunks: AsyncIterator[StreamChunk],
    settings: StreamSettings,
    *,
    accept: str,
    headers: Mapping[str, str],
    prelude: Iterable[str] = (),
) -> DeadlineStreamingResponse:
    """The response that streams ``chunks``: SSE, or plain text when ``accept`` asks for it and not for SSE.

    Args:
        chunks: The buffer's reader (``read_stream``).
        settings: Heartbeat, time limit and reconnect hint of stream responses.
        accept: The request's ``Accept`` header.
        headers: Response headers (the turn's ids).
        prelude: SSE events to send first; plain text has none.
    """
    # The body ends itself at max_duration_seconds; the response is cut a little later even if
    # the client stopped reading (then the body is never asked for its next part).
    hard_limit = settings.max_duration_seconds + settings.heartbeat_seconds + 5
    if _wants_plain_text(accept):
        body = text_body(
            chunks, heartbeat_seconds=settings.heartbeat_seconds, max_duration_seconds=settings.max_duration_seconds
        )
        return DeadlineStreamingResponse(
            body, max_seconds=hard_limit, media_type="text/plain; charset=utf-8", headers=dict(headers)
        )
    body = sse_body(
        chunks,
        heartbeat_seconds=settings.heartbeat_seconds,
        max_duration_seconds=settings.max_duration_seconds,
        retry_ms=settings.retry_ms,
        prelude=prelude,
    )
    return DeadlineStreamingResponse(
        body, max_seconds=hard_limit, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers}
    )


def _wants_plain_text(accept: str) -> bool:
    media_types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "text/plain" in media_types and "text/event-stream" not in media_types


def _is_terminal(chunk: StreamChunk) -> bool:
    return chunk.is_terminal


async def sse_body(
    chunks: AsyncIterator[StreamChunk],
    *,
    heartbeat_seconds: float,
    max_duration_seconds: float,
    retry_ms: int,
    prelude: Iterable[str] = (),
    encode: Callable[[StreamChunk], str] = chunk_to_sse,
    ends: Callable[[StreamChunk], bool] = _is_terminal,
) -> AsyncIterator[str]:
    """Yield SSE text for ``chunks``: one event per chunk (``id`` = entry id), heartbeats while idle.

    Args:
        chunks: The buffer's reader (``read_stream``); it is closed when the body ends.
        heartbeat_seconds: Send a comment line after this long without an event.
        max_duration_seconds: End after this long with a ``retry:`` hint.
        retry_ms: The reconnect delay in the hint.
        prelude: Events to send first (e.g. the ``start`` event with the turn's ids).
        encode: Encodes one chunk as an SSE event (a workflow stream's events say which step speaks).
        ends: Whether a chunk ends the body (by default a turn's terminal entry).

    Yields:
        SSE-framed text.
    """
    for event in prelude:
        yield event
    async with contextlib.aclosing(_paced(chunks, heartbeat_seconds, max_duration_seconds, ends)) as paced:
        async for item in paced:
            if isinstance(item, StreamChunk):
                yield encode(item)
            elif isinstance(item, _Heartbeat):
                yield encode_sse_comment()
            elif isinstance(item, _Unavailable):
                yield encode_sse_event(item.message, event="error")
            else:
                yield encode_sse_comment("time limit of this response reached: reconnect with Last-Event-ID")
                yield f"retry: {retry_ms}\n\n"


async def text_body(
    chunks: AsyncIterator[StreamChunk],
    *,
    heartbeat_seconds: float,
    max_duration_seconds: float,
) -> AsyncIterator[str]:
    """Yield the turn's text as plain text; a ``replace``, a cancellation, an error or the time limit in words.

    Args:
        chunks: The buffer's reader (``read_stream``); it is closed when the body ends.
        heartbeat_seconds: How often the reader is checked while idle (plain text has no heartbeat).
        max_duration_seconds: End after this long, with a last line that names the ``cursor`` to resume from.

    Yields:
        Text.
    """
    sent = ""
    last_id = ""
    calls: dict[str, StreamChunk] = {}  # tool calls whose result has not come yet
    async with contextlib.aclosing(_paced(chunks, heartbeat_seconds, max_duration_seconds)) as paced:
        async for item in paced:
            if isinstance(item, _Unavailable):
                yield f"\n[error] {item.message}\n"
            elif isinstance(item, _TimeUp):
                # Plain text has no event ids: say where to resume from.
                yield f"\n[time limit of this response reached; resume with cursor={last_id or '0'}]\n"
            elif isinstance(item, StreamChunk):
                last_id = item.entry_id or last_id
                if item.kind == "message":
                    sent += item.text
                    yield item.text
                elif item.kind == "replace":
                    # The committed answer differs from what was streamed: send what is missing, or all of it.
                    addition = item.text[len(sent) :] if item.text.startswith(sent) else "\n" + item.text
                    sent = item.text
                    if addition:
                        yield addition
                elif item.kind == "tool_call":
                    calls[item.tool_call_id or ""] = item
                elif item.kind == "tool_result":
                    call = calls.pop(item.tool_call_id or "", None)
                    yield _tool_line(call, item, after=sent)
                elif item.kind == "cancelled":
                    yield "\n[stopped: the turn was cancelled]\n"
                elif item.kind == "error":
                    yield f"\n[error] {item.error or 'error'}\n"


def _tool_line(call: StreamChunk | None, result: StreamChunk | None, *, after: str) -> str:
    """One line for a tool call and its result: ``[tool] name {arguments} -> result``."""
    name = (call.tool_name if call else None) or "tool"
    arguments = (call.tool_arguments if call else None) or ""
    line = f"[tool] {name} {arguments}".rstrip()
    if result is not None:
        line += " -> " + " ".join((result.tool_result or "").split())
    # Tool calls come before the text that quotes them, so the line usually opens the response.
    return ("\n" if after and not after.endswith("\n") else "") + line + "\n"


class SupportsAguiTranslation(Protocol):
    """A run's translator from stream chunks to AG-UI SSE (``AguiTranslator``, ``WorkflowAguiTranslator``)."""

    @property
    def finished(self) -> bool:
        """Whether the run's last event has been produced."""
        ...

    def run_started(self) -> BaseEvent:
        """The run's opening event."""
        ...

    def sse(self, chunk: StreamChunk, previous_id: str) -> tuple[str, str]:
        """The SSE text of one chunk's events and the id to pass as ``previous_id`` next time."""
        ...


async def agui_body(
    chunks: AsyncIterator[StreamChunk],
    translator: SupportsAguiTranslation,
    *,
    cursor: str,
    heartbeat_seconds: float,
    max_duration_seconds: float,
    retry_ms: int,
    ends: Callable[[StreamChunk], bool] = _is_terminal,
) -> AsyncIterator[str]:
    """Yield an AG-UI run as SSE: ``RUN_STARTED``, the turn's events, heartbeats while idle.

    Args:
        chunks: The buffer's reader of the turn; it is closed when the body ends.
        translator: The run's translator (see ``_agui_events``).
        cursor: Where the response begins: ``RUN_STARTED`` carries it as its id.
        heartbeat_seconds: Send a comment line after this long without an event.
        max_duration_seconds: End after this long with a ``retry:`` hint (re-attach with ``Last-Event-ID``).
        retry_ms: The reconnect delay in the hint.
        ends: Whether a chunk (once translated) ends the run (by default the turn's terminal entry).
    """
    previous = cursor
    yield encode_event(translator.run_started(), previous)
    async with contextlib.aclosing(_paced(chunks, heartbeat_seconds, max_duration_seconds, ends)) as paced:
        async for item in paced:
            if isinstance(item, StreamChunk):
                text, previous = translator.sse(item, previous)
                if text:
                    yield text
            elif isinstance(item, _Heartbeat):
                yield encode_sse_comment()
            elif isinstance(item, _Unavailable):
                # Not the run's failure: the client re-attaches later (same runId, Last-Event-ID).
                yield encode_sse_comment(item.message)
            else:
                yield encode_sse_comment("time limit of this response reached: re-attach with Last-Event-ID")
                yield f"retry: {retry_ms}\n\n"


async def _paced(
    chunks: AsyncIterator[StreamChunk],
    heartbeat_seconds: float,
    max_duration_seconds: float,
    ends: Callable[[StreamChunk], bool] = _is_terminal,
) -> AsyncIterator[_Paced]:
    """Yield chunks as they come, a heartbeat marker after each idle period, and a final marker on time-out.

    Ends after a terminal chunk, at the end of ``chunks``, on time-out or when Valkey becomes unreachable.
    The pending read is never cancelled by a heartbeat: ``asyncio.wait`` leaves it running.
    """
    deadline = time.monotonic() + max_duration_seconds
    pending: asyncio.Future[StreamChunk] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(chunks))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield _TimeUp()
                return
            done, _ = await asyncio.wait({pending}, timeout=min(heartbeat_seconds, remaining))
            if not done:
                if deadline - time.monotonic() > 0:
                    yield _Heartbeat()
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                return
            except ValkeyUnavailableError as error:
                logger.warning("Stream read failed: %s", error)
                yield _Unavailable("Valkey is unavailable; reconnect later with Last-Event-ID.")
                return
            yield chunk
            if ends(chunk) or (chunk.kind == "error" and not chunk.entry_id):
                return  # the end, or the reader gave up (an error without an entry id)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
