"""Small helpers for the buffer tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from agent_framework import AgentResponse, AgentResponseUpdate, Content, Message
from agent_framework_durabletask import AgentCallbackContext

from valkey_buffer import StreamChunk, ValkeyStreamBuffer

MakeBuffer = Callable[..., ValkeyStreamBuffer]
"""The ``make_buffer`` fixture: ``make_buffer(settings, **options)`` builds a buffer closed when the test ends."""


def new_id(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def context(session_id: str, correlation_id: str, agent: str = "travel") -> AgentCallbackContext:
    return AgentCallbackContext(agent_name=agent, correlation_id=correlation_id, session_id=session_id)


def update(text: str) -> AgentResponseUpdate:
    return AgentResponseUpdate(contents=[Content.from_text(text)], role="assistant")


def response(text: str) -> AgentResponse:
    return AgentResponse(messages=[Message(role="assistant", contents=[Content.from_text(text)])])


async def stream_turn(buffer: ValkeyStreamBuffer, session_id: str, correlation_id: str, pieces: list[str]) -> None:
    """Drive the callback the way AgentEntity does for one successful streamed turn."""
    ctx = context(session_id, correlation_id)
    for piece in pieces:
        await buffer.on_streaming_response_update(update(piece), ctx)
    await buffer.on_agent_response(response("".join(pieces)), ctx)


async def collect(
    buffer: ValkeyStreamBuffer, session_id: str, cursor: str | None = None, **kwargs
) -> list[StreamChunk]:  # type: ignore[no-untyped-def]
    return [chunk async for chunk in buffer.read_stream(session_id, cursor, **kwargs)]
