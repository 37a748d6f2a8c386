"""Which stream and turn an agent run writes to: carried in the run request's options, for the middleware.

``agent.run`` is given neither the session nor the correlation id, yet the failure reporter and the
cancellation middleware both need them. The HTTP routes therefore put them into the ``RunRequest``
options under a private key (:func:`turn_options`), which the durable entity forwards to
``agent.run(options=...)`` (for its streaming run and for its non-streaming retry alike; an
undocumented behaviour, checked in ``_af_compat``). The first
middleware that looks takes the key out, so the chat client never sees it, and leaves the ids in the
run's middleware metadata for the others. The same key carries what the tracing middleware needs on
the other side of the durable hop: the accepting request's trace context (W3C headers) and when it
accepted the turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_framework import AgentContext

TURN_OPTION_KEY = "_valkey_stream_turn"
"""Private ``RunRequest.options`` key that carries the ids of the stream a turn writes to."""


@dataclass(frozen=True)
class StreamTurn:
    """The stream (session) and turn (correlation) a run writes to, and where the turn's trace is.

    Attributes:
        session_id: The durable entity key, which also names the turn's stream.
        correlation_id: The turn's correlation id.
        accepted_at_ms: When the HTTP route accepted the turn (milliseconds since the epoch), if known.
        trace_headers: The accepting request's trace context (``traceparent``...); empty if untraced.
        workflow: The workflow whose step the run is (the session is then its orchestration
            instance), or None for a chat turn.
    """

    session_id: str
    correlation_id: str
    accepted_at_ms: int | None = None
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    workflow: str | None = None


def turn_options(
    session_id: str,
    correlation_id: str,
    *,
    accepted_at_ms: int | None = None,
    trace_headers: Mapping[str, str] | None = None,
    workflow: str | None = None,
) -> dict[str, Any]:
    """Return ``RunRequest`` options that tell the middleware where a turn streams and where it is traced.

    Args:
        session_id: The durable entity key, which also names the turn's stream.
        correlation_id: The turn's correlation id.
        accepted_at_ms: When the route accepted the turn, in milliseconds since the epoch.
        trace_headers: The route's trace context as W3C headers (``traceparent``, ``tracestate``).
        workflow: The workflow whose step the run is (``session_id`` is its instance id).

    Returns:
        A dict to pass as ``RunRequest(options=...)``.
    """
    turn: dict[str, Any] = {"session_id": session_id, "correlation_id": correlation_id}
    if accepted_at_ms is not None:
        turn["accepted_at_ms"] = accepted_at_ms
    if trace_headers:
        turn["trace"] = dict(trace_headers)
    if workflow:
        turn["workflow"] = workflow
    return {TURN_OPTION_KEY: turn}


def stream_turn_of(context: AgentContext) -> StreamTurn | None:
    """The turn a run writes to, taken out of its options (once) and kept in its middleware metadata."""
    if TURN_OPTION_KEY in context.metadata:
        turn: StreamTurn | None = context.metadata[TURN_OPTION_KEY]
        return turn
    options = context.options
    if not isinstance(options, Mapping) or TURN_OPTION_KEY not in options:
        return None
    # A copy without the key: the chat client must not see it, and the entity passes the very same
    # options dict to its non-streaming retry, which needs the key again.
    context.options = {key: value for key, value in options.items() if key != TURN_OPTION_KEY}
    context.metadata[TURN_OPTION_KEY] = turn = _parse(options[TURN_OPTION_KEY])
    return turn


def _parse(raw: object) -> StreamTurn | None:
    if not isinstance(raw, Mapping):
        return None
    session_id, correlation_id = raw.get("session_id"), raw.get("correlation_id")
    if not isinstance(session_id, str) or not isinstance(correlation_id, str) or not session_id or not correlation_id:
        return None
    accepted_at_ms = raw.get("accepted_at_ms")
    if not isinstance(accepted_at_ms, int) or isinstance(accepted_at_ms, bool):
        accepted_at_ms = None
    trace = raw.get("trace")
    headers = (
        {k: v for k, v in trace.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(trace, Mapping)
        else {}
    )
    workflow = raw.get("workflow")
    return StreamTurn(
        session_id=session_id,
        correlation_id=correlation_id,
        accepted_at_ms=accepted_at_ms,
        trace_headers=headers,
        workflow=workflow if isinstance(workflow, str) and workflow else None,
    )
