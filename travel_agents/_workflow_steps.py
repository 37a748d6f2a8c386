"""Announces a workflow step on the workflow's stream before its agent speaks: the ``step_started`` event.

A workflow's readers follow one stream per instance, in which each agent call is a turn of its own
(its correlation id). The turn's text and its terminal entry come from the buffer; this middleware
adds the start, so that a reader sees a step (which agent, which correlation id) as soon as it
begins, before its first token or tool call. The event is appended once per step (its id is the
step's correlation id), so a step that the durable runtime runs again is not announced twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent_framework import AgentContext, AgentMiddleware

from ._stream_turn import stream_turn_of

logger = logging.getLogger(__name__)

STEP_STARTED_EVENT = "step_started"

WORKFLOW_CANCEL_ID = "workflow"
"""The cancel request (``request_cancel(instance_id, WORKFLOW_CANCEL_ID)``) that stops a workflow's later steps."""


def step_started_event_id(correlation_id: str) -> str:
    """The session-event id of a step's ``step_started`` entry."""
    return f"step:{correlation_id}"


class SupportsSessionEvents(Protocol):
    """What the middleware needs from the stream buffer (``ValkeyStreamBuffer`` has it)."""

    def append_event_once(
        self,
        session_id: str,
        event_id: str,
        event: str,
        data: dict[str, object] | None = None,
        *,
        correlation_id: str | None = None,
        agent: str | None = None,
    ) -> Awaitable[Any]:
        """Append a session event unless its id was appended before."""
        ...

    def is_cancel_requested(self, session_id: str, correlation_id: str) -> Awaitable[bool]:
        """Whether a cancel was requested for the turn (or, by ``WORKFLOW_CANCEL_ID``, the workflow)."""
        ...

    def request_cancel(self, session_id: str, correlation_id: str) -> Awaitable[Any]:
        """Ask the instance that runs a turn to stop it."""
        ...


class WorkflowStepAnnouncer(AgentMiddleware):
    """Agent middleware that appends ``step_started`` for a run that is a workflow step; other runs pass.

    A step of a cancelled workflow (one that started after the cancel route ran: its entity call
    was already on its way) is cancelled at once, so the ``TurnCanceller`` after this middleware
    commits it as cancelled without calling the model.

    Args:
        sink: Where the event goes, usually the app's ``ValkeyStreamBuffer``.
    """

    def __init__(self, sink: SupportsSessionEvents) -> None:
        self.sink = sink

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        """Announce the step (awaited: it lands before the step's first chunk), then run it."""
        turn = stream_turn_of(context)
        if turn is not None and turn.workflow:
            agent = getattr(context.agent, "name", None)
            try:
                await self.sink.append_event_once(
                    turn.session_id,
                    step_started_event_id(turn.correlation_id),
                    STEP_STARTED_EVENT,
                    {"workflow": turn.workflow},
                    correlation_id=turn.correlation_id,
                    agent=agent,
                )
            except Exception:
                # The step runs without its announcement: its first chunk still opens its lane.
                logger.warning("Could not announce workflow step %s", turn.correlation_id, exc_info=True)
            try:
                if await self.sink.is_cancel_requested(turn.session_id, WORKFLOW_CANCEL_ID):
                    await self.sink.request_cancel(turn.session_id, turn.correlation_id)
            except Exception:
                logger.warning("Could not check whether workflow %s was cancelled", turn.session_id, exc_info=True)
        await call_next()
