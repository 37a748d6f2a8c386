"""An offline chat client that streams a fixed, multi-sentence answer: demos and tests need no model."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatMiddlewareLayer,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
    ResponseStream,
)

from ._tools import known_cities

FAIL_MARKER = "#fail"
"""A user message containing this makes the scripted model fail mid-stream and on the retry."""

FLAKY_MARKER = "#flaky"
"""A user message containing this makes only the streaming call fail; the non-streaming retry succeeds."""

_ECHO_LIMIT = 200
_WEATHER_TOOL = "get_destination_weather"
_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip


class ScriptedModelError(RuntimeError):
    """Raised by the scripted model when asked to fail (a message containing ``#fail`` or ``#flaky``)."""


class ScriptedChatClient(FunctionInvocationLayer, ChatMiddlewareLayer, BaseChatClient):
    """A deterministic chat client that needs no network.

    It answers every message with the same short travel plan that quotes the user's last message, and
    streams it in small chunks with a fixed delay between them, so a reader can watch a turn unfold.
    When the message names a known city and a month and the agent offers ``get_destination_weather``,
    it first calls that tool, as a real model would, and quotes its result in the answer.
    ``#fail`` in the user's message makes it raise halfway through the stream (and on the
    framework's non-streaming retry); ``#flaky`` makes only the streaming call fail.
    """

    OTEL_PROVIDER_NAME = "scripted"

    def __init__(self, *, chunk_delay_seconds: float = 0.05, chunk_chars: int = 12) -> None:
        """Create the scripted client.

        Args:
            chunk_delay_seconds: Pause before each streamed chunk, in seconds (0 streams as fast as possible).
            chunk_chars: Approximate size of one chunk; chunks end on a word boundary.

        Raises:
            ValueError: If ``chunk_delay_seconds`` is negative or ``chunk_chars`` is less than 1.
        """
        if chunk_delay_seconds < 0:
            raise ValueError("chunk_delay_seconds must not be negative.")
        if chunk_chars < 1:
            raise ValueError("chunk_chars must be at least 1.")
        super().__init__()
        self.chunk_delay_seconds = chunk_delay_seconds
        self.chunk_chars = chunk_chars
        # What the model saw and did, for checks: calls so far, the messages of the last call, and
        # the chunks streamed so far (a stream closed early stops adding to them).
        self.calls = 0
        self.last_messages: list[Message] = []
        self.chunks_streamed = 0

    def _inner_get_response(
        self,
        *,
        messages: Sequence[Message],
        stream: bool,
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        self.calls += 1
        self.last_messages = list(messages)
        user_text = _last_user_text(messages)
        tool_call = _weather_tool_call(user_text, options) if not _has_tool_result(messages) else None
        if tool_call is not None:
            return self._call_tool(tool_call, stream=stream)
        answer = scripted_answer(user_text, tool_result=_last_tool_result(messages))
        if stream:
            return ResponseStream(
                self._stream_chunks(answer, fail=FAIL_MARKER in user_text or FLAKY_MARKER in user_text),
                finalizer=ChatResponse.from_updates,
            )
        return self._respond(answer, fail=FAIL_MARKER in user_text)

    def _call_tool(
        self, call: Content, *, stream: bool
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        if stream:

            async def one_update() -> AsyncIterator[ChatResponseUpdate]:
                yield ChatResponseUpdate(role="assistant", contents=[call], created_at=_now())

            return ResponseStream(one_update(), finalizer=ChatResponse.from_updates)

        async def respond() -> ChatResponse:
            return ChatResponse(messages=[Message(role="assistant", contents=[call])], created_at=_now())

        return respond()

    async def _respond(self, answer: str, *, fail: bool) -> ChatResponse:
        if fail:
            raise ScriptedModelError("The scripted model failed as asked (#fail in the message).")
        return ChatResponse(
            messages=[Message(role="assistant", contents=[Content.from_text(answer)])], created_at=_now()
        )

    async def _stream_chunks(self, answer: str, *, fail: bool) -> AsyncIterator[ChatResponseUpdate]:
        chunks = split_into_chunks(answer, self.chunk_chars)
        fail_at = len(chunks) // 2 if fail else -1
        for index, chunk in enumerate(chunks):
            if index == fail_at:
                raise ScriptedModelError("The scripted model failed mid-stream as asked.")
            if self.chunk_delay_seconds:
                await asyncio.sleep(self.chunk_delay_seconds)
            self.chunks_streamed += 1
            yield ChatResponseUpdate(role="assistant", contents=[Content.from_text(chunk)], created_at=_now())


def scripted_answer(user_text: str, *, tool_result: str | None = None) -> str:
    """Return the scripted model's answer to ``user_text`` (deterministic, several sentences).

    Args:
        user_text: The user's last message, quoted at the start of the answer.
        tool_result: The weather tool's result, quoted when the model called it.
    """
    quoted = " ".join(user_text.split())
    if len(quoted) > _ECHO_LIMIT:
        quoted = quoted[: _ECHO_LIMIT - 1] + "…"
    weather = f"Typical weather: {tool_result} " if tool_result else ""
    # A little Markdown, as a real model writes it, so that clients show how they render it.
    return (
        f'You asked: "{quoted}". '
        f"{weather}"
        "Here is a **three-day plan** that fits most city trips:\n\n"
        "- **Day one:** arrive early, drop your bags and walk the old town to get your bearings.\n"
        "- **Day two:** visit the main museum in the morning and take a food tour in the evening.\n"
        "- **Day three:** take a day trip to the coast or the hills and be back for a late dinner.\n\n"
        "Pack light layers and *comfortable shoes*, and check the weather the day before you leave. "
        "Have a great trip!"
    )


def split_into_chunks(text: str, chunk_chars: int) -> list[str]:
    """Split ``text`` into chunks of about ``chunk_chars`` characters that end after a word.

    Joining the chunks gives back ``text`` exactly.
    """
    pieces = re.findall(r"\S+\s*|\s+", text)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        current += piece
        if len(current) >= chunk_chars:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    return chunks


def _weather_tool_call(user_text: str, options: Mapping[str, Any]) -> Content | None:
    tools = options.get("tools") or []
    if not any(getattr(tool, "name", None) == _WEATHER_TOOL for tool in tools):
        return None
    words = re.findall(r"[a-z]+", user_text.lower())
    city = next((word for word in words if word in known_cities()), None)
    month = next((word for word in words if word in _MONTHS), None)
    if city is None or month is None:
        return None
    return Content.from_function_call(
        call_id=f"call_{city}_{month}", name=_WEATHER_TOOL, arguments={"city": city.title(), "month": month.title()}
    )


def _has_tool_result(messages: Sequence[Message]) -> bool:
    return _last_tool_result(messages) is not None


def _last_tool_result(messages: Sequence[Message]) -> str | None:
    # Only results given after the user's last message count: an older turn's call is history.
    for message in reversed(messages):
        if message.role == "user":
            return None
        for content in message.contents:
            if content.type == "function_result" and content.result is not None:
                return str(content.result)
    return None


def _now() -> str:
    # The durable state records when a response was created; without it the framework logs a warning.
    return datetime.now(UTC).isoformat()


def _last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.text or ""
    return ""
