"""Accepted turns: a turn exists from the moment a route accepts it, before the agent's state knows it.

Each session keeps a hash ``agent-turns:<session>`` (correlation id -> JSON record) that lives as long
as the session's stream, so the status route can tell "accepted, not started yet" from "never
accepted", and a turn's readers can link their spans to the trace of the request that accepted it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._glide import ClientScope, atomic_batch, text
from ._ids import turns_key, validate_id
from ._settings import ValkeySettings
from ._telemetry import current_trace_headers

logger = logging.getLogger("valkey_buffer")


@dataclass(frozen=True)
class AcceptedTurn:
    """The record of a turn an HTTP route accepted (see ``ValkeyStreamBuffer.record_turn_accepted``).

    Attributes:
        agent: The agent that runs the turn.
        accepted_at_ms: When it was accepted, in milliseconds since the epoch.
        message: The user's message, when it was recorded (the agent's state has it only once the
            turn is committed).
        trace_headers: The W3C trace context (``traceparent``...) of the request that accepted it;
            empty when it was not traced.
    """

    agent: str
    accepted_at_ms: int
    message: str | None = None
    trace_headers: Mapping[str, str] = field(default_factory=dict)


class AcceptedTurns:
    """Records and looks up accepted turns.

    Args:
        settings: The stream TTL (records live as long as the stream) and the server kind.
        valkey: Opens the running loop's client with errors translated.
    """

    def __init__(self, settings: ValkeySettings, valkey: ClientScope) -> None:
        self._settings = settings
        self._valkey = valkey

    async def record(
        self,
        session_id: str,
        correlation_id: str,
        agent: str,
        *,
        message: str | None = None,
        accepted_at_ms: int | None = None,
    ) -> AcceptedTurn:
        """Record that a turn was accepted, with the current trace context; the record written.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = turns_key(session_id)
        validate_id(correlation_id, "correlation_id")
        accepted = AcceptedTurn(
            agent=agent,
            accepted_at_ms=int(time.time() * 1000) if accepted_at_ms is None else accepted_at_ms,
            message=message,
            trace_headers=current_trace_headers(),
        )
        fields: dict[str, Any] = {
            "agent": accepted.agent,
            "accepted_at_ms": accepted.accepted_at_ms,
            "message": accepted.message,
        }
        if accepted.trace_headers:
            fields["trace"] = dict(accepted.trace_headers)
        batch = atomic_batch(cluster=self._settings.cluster)
        batch.hset(key, {correlation_id: json.dumps(fields)})
        batch.expire(key, self._settings.stream_ttl_seconds)
        async with self._valkey() as client:
            await client.exec(batch, raise_on_error=True)
        return accepted

    async def lookup(self, session_id: str, correlation_id: str) -> AcceptedTurn | None:
        """The record of one accepted turn, ``None`` if there is none.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = turns_key(session_id)
        validate_id(correlation_id, "correlation_id")
        async with self._valkey() as client:
            raw = await client.hget(key, correlation_id)
        return None if raw is None else _decode(raw)

    async def of_session(self, session_id: str) -> dict[str, AcceptedTurn]:
        """Every accepted turn of a session still within the stream's TTL, by correlation id.

        Raises:
            InvalidIdError: If the id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = turns_key(session_id)
        async with self._valkey() as client:
            raw = await client.hgetall(key)
        turns: dict[str, AcceptedTurn] = {}
        for correlation_id, value in (raw or {}).items():
            record = _decode(value)
            if record is not None:
                turns[text(correlation_id)] = record
        return turns

    async def trace_headers(self, session_id: str, correlation_id: str) -> Mapping[str, str] | None:
        """The trace context of the request that accepted a turn, ``None`` when it was not recorded."""
        accepted = await self.lookup(session_id, correlation_id)
        return accepted.trace_headers if accepted is not None else None


def _decode(raw: bytes | str) -> AcceptedTurn | None:
    try:
        record = json.loads(text(raw))
        message, trace = record.get("message"), record.get("trace")
        return AcceptedTurn(
            agent=str(record["agent"]),
            accepted_at_ms=int(record["accepted_at_ms"]),
            message=message if isinstance(message, str) else None,
            trace_headers={str(k): str(v) for k, v in trace.items()} if isinstance(trace, dict) else {},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("Ignored a malformed accepted-turn record")
        return None
