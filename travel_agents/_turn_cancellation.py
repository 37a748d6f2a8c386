"""Stops a turn whose cancel was requested: the model's stream is closed, the partial answer committed.

A turn may run on any instance; the cancel request reaches it through Valkey (see
``valkey_buffer._cancel_watch``). This middleware wraps the agent's streaming run: it passes the
model's updates on until the turn is cancelled, then closes the model's stream (with Azure OpenAI
that ends token generation and billing) and ends the run with what was produced so far, marked as
cancelled. The durable entity commits that partial answer like any other, so the session's history
stays whole and the next turn sees it. A turn cancelled while it waited behind another turn of its
session never calls the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from agent_framework import AgentContext, AgentMiddleware, AgentResponse, AgentResponseUpdate, Message, ResponseStream

from valkey_buffer import CancelWatch

from ._cancelled_marker import cancelled_marker
from ._stream_turn import StreamTurn, stream_turn_of

logger = logging.getLogger(__name__)


class SupportsCancellation(Protocol):
    """What the middleware needs from the stream buffer (``ValkeyStreamBuffer`` has it)."""

    def is_cancel_requested(self, session_id: str, correlation_id: str) -> Awaitable[bool]:
        """Whether a cancel was requested for the turn."""
        ...

    def watch_cancellation(self, session_id: str, correlation_id: str) -> CancelWatch:
        """The running turn's cancellation (an async context manager with an ``event``)."""
        ...


class TurnCanceller(AgentMiddleware):
    """Agent middleware that stops a turn when its cancel is requested.

    Args:
        source: Where cancel requests are found, usually the app's ``ValkeyStreamBuffer``.
    """

    def __init__(self, source: SupportsCancellation) -> None:
        self.source = source

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        """Skip the model for a turn cancelled before it started; stop its stream when cancelled later."""
        turn = stream_turn_of(context)
        if turn is None:
            await call_next()
            return
        if await self._cancelled_already(turn):
            logger.info("Turn %s was cancelled before it started: the model is not called", turn.correlation_id)
            context.result = _cancelled_stream([]) if context.stream else _cancelled_response([])
            return
        await call_next()
        if context.stream and isinstance(context.result, ResponseStream):
            context.result = _until_cancelled(
                context.result, self.source.watch_cancellation(turn.session_id, turn.correlation_id)
            )

    async def _cancelled_already(self, turn: StreamTurn) -> bool:
        try:
            return await self.source.is_cancel_requested(turn.session_id, turn.correlation_id)
        except Exception:
            # Valkey is unreachable: the turn runs; a later cancel still reaches it through the stream.
            logger.warning("Could not check whether turn %s was cancelled", turn.correlation_id, exc_info=True)
            return False


def _until_cancelled(
    model_stream: ResponseStream[AgentResponseUpdate, AgentResponse], cancellation: CancelWatch
) -> ResponseStream[AgentResponseUpdate, AgentResponse]:
    """The model's stream, ended early with a cancelled answer when ``cancellation`` fires."""
    stopped = False

    async def updates() -> AsyncIterator[AgentResponseUpdate]:
        nonlocal stopped
        async with cancellation:
            try:
                async for update in _until_set(model_stream, cancellation.event):
                    yield update
            finally:
                stopped = cancellation.is_cancelled
                # Closing the model's stream closes its HTTP response: the model stops generating.
                with contextlib.suppress(Exception):
                    await model_stream.close()
        if stopped:
            # The marker travels as the last update: every layer that builds the final response
            # from the updates keeps it.
            yield AgentResponseUpdate(role="assistant", contents=[cancelled_marker()], created_at=_now())

    async def final_response(streamed: Sequence[AgentResponseUpdate]) -> AgentResponse:
        if stopped:
            return AgentResponse.from_updates(streamed)
        return await model_stream.get_final_response()

    return ResponseStream(updates(), finalizer=final_response)


async def _until_set(
    model_stream: ResponseStream[AgentResponseUpdate, AgentResponse], stop: asyncio.Event
) -> AsyncIterator[AgentResponseUpdate]:
    """The model's updates until it ends or ``stop`` is set, whichever comes first.

    The wait for the next update is cut short in this very task (a timeout rescheduled to now), not
    by reading the model in another task: Agent Framework keeps per-task context around the model
    call, which must be entered and left in the same task.
    """
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Timeout] = []  # the scope of the wait in progress, if any

    def cut_short(_: object) -> None:
        if waiting:
            waiting[0].reschedule(loop.time())

    watcher = loop.create_task(stop.wait())
    watcher.add_done_callback(cut_short)
    iterator = model_stream.__aiter__()
    try:
        while not stop.is_set():
            try:
                async with asyncio.timeout(None) as scope:
                    waiting.append(scope)
                    try:
                        update = await iterator.__anext__()
                    finally:
                        waiting.clear()
            except (TimeoutError, StopAsyncIteration):
                return
            yield update
    finally:
        watcher.cancel()


def _cancelled_response(messages: list[Message]) -> AgentResponse:
    """The answer of a cancelled turn: what was produced so far, and the cancellation marker."""
    return AgentResponse(
        messages=[*messages, Message(role="assistant", contents=[cancelled_marker()])], created_at=_now()
    )


def _cancelled_stream(messages: list[Message]) -> ResponseStream[AgentResponseUpdate, AgentResponse]:
    async def marker_only() -> AsyncIterator[AgentResponseUpdate]:
        yield AgentResponseUpdate(role="assistant", contents=[cancelled_marker()], created_at=_now())

    return ResponseStream(marker_only(), finalizer=lambda _: _cancelled_response(messages))


def _now() -> str:
    return datetime.now(UTC).isoformat()
