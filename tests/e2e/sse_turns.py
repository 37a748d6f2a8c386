"""Client side of a turn over real HTTP: start it, follow its SSE with cuts and resumes, read its committed status."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from tests.eventually import eventually_blocking

TERMINAL_EVENTS = ("done", "cancelled", "error")


@dataclass
class FollowedTurn:
    """What a client saw of one turn across all its connections."""

    text: str = ""
    event_ids: list[str] = field(default_factory=list)
    events: list[ServerSentEvent] = field(default_factory=list)
    connections: int = 0
    cuts: int = 0  # connections the client dropped on purpose
    self_endings: int = 0  # connections the server ended before the turn's end (with a retry hint)
    retry_hints: list[int] = field(default_factory=list)
    terminal: ServerSentEvent | None = None

    @property
    def last_event_id(self) -> str | None:
        return self.event_ids[-1] if self.event_ids else None

    def apply(self, sse: ServerSentEvent) -> None:
        self.events.append(sse)
        if sse.id:
            self.event_ids.append(sse.id)
        if sse.event == "message":
            self.text += sse.data
        elif sse.event == "replace":
            self.text = sse.data
        elif sse.event in TERMINAL_EVENTS:
            self.terminal = sse


def start_turn(
    client: httpx.Client, api: str, agent: str, message: str, session_id: str | None = None
) -> tuple[str, str]:
    """POST /agents/{agent}/run; return (session_id, correlation_id)."""
    body: dict[str, Any] = {"message": message}
    if session_id:
        body["session_id"] = session_id
    response = client.post(f"{api}/agents/{agent}/run", json=body)
    assert response.status_code == 202, response.text
    payload = response.json()
    return payload["session_id"], payload["correlation_id"]


def _is_not_a_chunk(sse: ServerSentEvent) -> bool:
    # httpx-sse also yields a block that has no data line (a lone "retry: N", or the blank line after
    # a comment) as an empty message event carrying the sticky last id; the SSE spec dispatches no
    # event for those, and the app never streams an empty message chunk.
    return sse.event == "message" and not sse.data


def follow_turn(
    client: httpx.Client,
    api: str,
    session_id: str,
    correlation_id: str,
    *,
    cut_after: Iterable[int] = (),
    max_connections: int = 50,
    resume_from: str | None = None,
    turn: FollowedTurn | None = None,
) -> FollowedTurn:
    """Follow one turn to its terminal event, dropping the connection after the given numbers of events.

    Each cut closes the connection after that many events of the current connection, then reconnects
    with ``Last-Event-ID`` set to the last id seen, as a browser's ``EventSource`` does. A connection
    that the server ends early (its maximum duration) is resumed the same way.

    Args:
        resume_from: The ``Last-Event-ID`` of the first connection (a client that saw the turn before).
        turn: Record into this object, so another thread can watch the turn's progress.
    """
    turn = FollowedTurn() if turn is None else turn
    cuts = list(cut_after)
    url = f"{api}/agent/stream/{quote(session_id, safe='')}"
    while turn.terminal is None:
        assert turn.connections < max_connections, f"no terminal event after {turn.connections} connections"
        last_event_id = turn.last_event_id or resume_from
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        cut_at = cuts.pop(0) if cuts else None
        seen = 0
        turn.connections += 1
        with connect_sse(client, "GET", url, params={"correlation_id": correlation_id}, headers=headers) as source:
            assert source.response.status_code == 200, source.response.read()
            for sse in source.iter_sse():
                if sse.retry is not None:
                    turn.retry_hints.append(sse.retry)
                if _is_not_a_chunk(sse):
                    continue
                turn.apply(sse)
                seen += 1
                if turn.terminal is not None:
                    break
                if cut_at is not None and seen >= cut_at:
                    turn.cuts += 1
                    break
            else:
                if turn.terminal is None:
                    turn.self_endings += 1
    return turn


def committed_turn(
    client: httpx.Client, api: str, agent: str, session_id: str, correlation_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the status route until the turn is committed (completed or failed); return its JSON."""
    url = f"{api}/agents/{agent}/sessions/{session_id}/turns/{correlation_id}"
    body: dict[str, Any] = {}

    def committed() -> dict[str, Any] | None:
        nonlocal body
        response = client.get(url)
        assert response.status_code in (200, 404), response.text
        body = response.json()
        return body if body.get("status") in ("completed", "failed") else None

    return eventually_blocking(
        committed, timeout=timeout, interval=0.1, message=lambda: f"turn {correlation_id} not committed: {body}"
    )


def agent_names(client: httpx.Client, api: str) -> list[str]:
    """The registered agents, from the health route."""
    response = client.get(f"{api}/health")
    assert response.status_code == 200, response.text
    return [a["name"] if isinstance(a, dict) else a for a in response.json()["agents"]]
