"""Puts a turn's agent run into the trace of the HTTP request that accepted it, across the durable hop.

The route that accepts a turn and the entity that runs it are different invocations, often on
different instances: the durable signal carries no trace context of its own. The route therefore
puts its W3C trace context (and the time it accepted the turn) into the run request's private option
(see ``_stream_turn``); this middleware, the outermost one, restores that context around the agent
run. Agent Framework's ``invoke_agent`` span (and the ``chat`` and ``execute_tool`` spans under it)
then join the route's trace, as does whatever the other middleware logs. The stream buffer is told
too (``begin_turn``): its span of the turn's stream joins the same trace, and it measures the time
to first chunk from the acceptance.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from agent_framework import AgentContext, AgentMiddleware
from opentelemetry import context as otel_context

from valkey_buffer import trace_context_from_headers

from ._stream_turn import stream_turn_of

logger = logging.getLogger(__name__)


class SupportsTurnTracing(Protocol):
    """What the middleware needs from the stream buffer (``ValkeyStreamBuffer`` has it)."""

    def begin_turn(
        self,
        session_id: str,
        correlation_id: str,
        *,
        agent: str | None = None,
        trace_context: otel_context.Context | None = None,
        accepted_at_ms: int | None = None,
    ) -> None:
        """Say which trace the turn's stream belongs to and when the turn was accepted."""
        ...


class TurnTracing(AgentMiddleware):
    """Agent middleware that runs the agent in the trace of the request that accepted the turn.

    Args:
        buffer: The app's stream buffer, told where the turn's stream telemetry belongs.
    """

    def __init__(self, buffer: SupportsTurnTracing) -> None:
        self._buffer = buffer

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        """Restore the turn's trace context around the run (the streaming run and its retry alike)."""
        turn = stream_turn_of(context)
        if turn is None:
            await call_next()
            return
        parent = trace_context_from_headers(turn.trace_headers)
        try:
            self._buffer.begin_turn(
                turn.session_id,
                turn.correlation_id,
                agent=getattr(context.agent, "name", None),
                trace_context=parent,
                accepted_at_ms=turn.accepted_at_ms,
            )
        except Exception:
            logger.warning("Could not begin the stream telemetry of turn %s", turn.correlation_id, exc_info=True)
        if parent is None:
            await call_next()
            return
        # Attached and detached around the same await, in the same task: for a streaming run the
        # framework starts its invoke_agent span inside call_next, before the first update is pulled.
        token = otel_context.attach(parent)
        try:
            await call_next()
        finally:
            otel_context.detach(token)
