"""The HTTP handlers: start a turn, stream it, resume a stream, report a turn's outcome, health, chat page.

Every handler takes the Starlette/FastAPI ``Request`` that Azure Functions' HTTP streaming hands it
(and the durable client where it needs one) and returns a FastAPI response: ``function_app.py``
registers them, and a local host can call the very same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from agent_framework_durabletask import (
    REQUEST_RESPONSE_FORMAT_JSON,
    REQUEST_RESPONSE_FORMAT_TEXT,
    SESSION_ID_FIELD,
    RunRequest,
)
from azurefunctions.extensions.http.fastapi import HTMLResponse, JSONResponse, Request, Response

from travel_agents import turn_options
from valkey_buffer import (
    CommittedTurn,
    CommittedTurnLookup,
    StreamChunk,
    StreamInputError,
    ValkeyStreamBuffer,
    ValkeyUnavailableError,
    parse_cursor,
    validate_id,
)

from ._event_stream import DeadlineStreamingResponse, sse_body, text_body
from ._responses import RequestError, json_error
from ._run_input import RunInput, parse_run_input
from ._settings import RunInputSettings, StreamSettings
from ._sse import encode_sse_event
from ._stream_tokens import StreamTokenError, StreamTokens
from ._telemetry import current_trace_headers, note_turn, traced_route
from ._turn_outcome import (
    SessionTurn,
    SupportsEntityClient,
    TurnOutcome,
    agent_entity_id,
    read_session_turns,
    read_turn_outcome,
)

logger = logging.getLogger(__name__)

SESSION_ID_RESPONSE_HEADER = "x-session-id"
CORRELATION_ID_RESPONSE_HEADER = "x-correlation-id"
STREAM_URL_RESPONSE_HEADER = "x-stream-url"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class TurnNotStartedError(RuntimeError):
    """The durable client could not signal the agent entity (answered with 503)."""


class AgentHttpApi:
    """The app's HTTP API over the durable agents and their Valkey streams.

    Args:
        buffer: The stream buffer the agents write to.
        agent_names: The registered agents' names.
        stream_settings: Heartbeat and maximum duration of stream responses.
        poll_interval_seconds: Delay between entity state reads while waiting for a response.
        max_poll_retries: Entity state reads before a waiting run request gives up with ``timeout``.
        chat_page: The HTML file served by :meth:`chat_page`.
        run_input_settings: What a request that starts a turn may ask for (system-role messages).

    Raises:
        ValueError: If no agent is given or a polling value is out of range.
    """

    def __init__(
        self,
        *,
        buffer: ValkeyStreamBuffer,
        agent_names: Sequence[str],
        stream_settings: StreamSettings,
        poll_interval_seconds: float = 1.0,
        max_poll_retries: int = 30,
        chat_page: Path | None = None,
        run_input_settings: RunInputSettings | None = None,
    ) -> None:
        if not agent_names:
            raise ValueError("agent_names must name at least one agent.")
        if poll_interval_seconds <= 0:
            raise ValueError("poll_interval_seconds must be positive.")
        if max_poll_retries < 1:
            raise ValueError("max_poll_retries must be at least 1.")
        self.buffer = buffer
        self.stream_settings = stream_settings
        self.poll_interval_seconds = poll_interval_seconds
        self.max_poll_retries = max_poll_retries
        self.chat_page_path = chat_page
        self.run_input_settings = run_input_settings or RunInputSettings()
        self.tokens = StreamTokens(
            buffer,
            ttl_seconds=stream_settings.token_ttl_seconds,
            rotation_seconds=stream_settings.token_rotation_seconds,
        )
        # Functions routes match case-insensitively; so does the agent name here.
        self._agents = {name.casefold(): name for name in agent_names}

    # ----- routes -----

    @traced_route("agents/{name}/run")
    async def run_turn(self, req: Request, client: SupportsEntityClient) -> Response:
        """``POST /api/agents/{name}/run``: start a turn; 202 with its ids, or the committed answer.

        With ``wait_for_response`` the entity state is polled for the committed response, as the
        built-in route does: 200 with ``status: success``, 500 with ``status: failed`` when the agent
        failed, or 202 with ``status: timeout`` when it is still running. ``stream_url`` is where a
        browser follows the turn without the function key (``?scope=session``: any turn of the session).
        """
        try:
            agent = self._agent(req)
            whole_session = _token_scope(req)
            run_input = await parse_run_input(req, self.run_input_settings)
        except RequestError as error:
            return json_error(error.message, error.status_code)
        try:
            session_id, correlation_id = await self._start_turn(client, agent, run_input)
            stream_url = await self._stream_url(req, session_id, correlation_id, whole_session=whole_session)
        except ValkeyUnavailableError:
            return _valkey_unavailable()
        except TurnNotStartedError as error:
            return json_error(str(error), 503)
        payload: dict[str, Any] = {
            "response": "Agent request accepted",
            "message": run_input.message,
            SESSION_ID_FIELD: session_id,
            "status": "accepted",
            "correlation_id": correlation_id,
            "stream_url": stream_url,
        }
        if not run_input.wait_for_response:
            return JSONResponse(payload, status_code=202, headers=_id_headers(session_id, correlation_id))
        outcome = await self._wait_for_outcome(client, agent, session_id, correlation_id)
        if outcome.status == "completed":
            payload.update(response=outcome.text, status="success", message_count=outcome.message_count)
            status_code = 200
        elif outcome.status == "cancelled":
            payload.update(response=outcome.text, status="cancelled", message_count=outcome.message_count)
            status_code = 200
        elif outcome.status == "failed":
            payload.update(response=None, status="failed", error=outcome.error, message_count=outcome.message_count)
            status_code = 500
        else:
            payload.update(response="Agent is still processing or timed out...", status="timeout")
            status_code = 202
        return JSONResponse(payload, status_code=status_code, headers=_id_headers(session_id, correlation_id))

    @traced_route("agents/{name}/stream")
    async def stream_turn(self, req: Request, client: SupportsEntityClient) -> Response:
        """``POST /api/agents/{name}/stream``: start a turn and stream it live in the same response.

        The ids and the ``stream_url`` (see :meth:`run_turn`) come in the ``x-session-id`` /
        ``x-correlation-id`` / ``x-stream-url`` headers and, for SSE, in a first ``start`` event.
        Valkey is checked before the turn is started: when it is unreachable the answer is 503 and
        no turn runs.
        """
        try:
            agent = self._agent(req)
            whole_session = _token_scope(req)
            run_input = await parse_run_input(req, self.run_input_settings)
        except RequestError as error:
            return json_error(error.message, error.status_code)
        if run_input.session_id is None:
            run_input = dataclasses.replace(run_input, session_id=uuid.uuid4().hex)
        try:
            # Every entry of the new turn comes after the stream's current end: follow it from there
            # instead of reading through the session's history. Also checks that Valkey is reachable.
            cursor = await self.buffer.latest_entry_id(run_input.session_id)
        except ValkeyUnavailableError:
            return _valkey_unavailable()
        try:
            session_id, correlation_id = await self._start_turn(client, agent, run_input)
            stream_url = await self._stream_url(req, session_id, correlation_id, whole_session=whole_session)
        except ValkeyUnavailableError:
            return _valkey_unavailable()
        except TurnNotStartedError as error:
            return json_error(str(error), 503)
        chunks = self.buffer.read_stream(
            session_id,
            cursor,
            correlation_id=correlation_id,
            committed_turn=self._committed_turn_lookup(client, session_id, agent),
            resumed=False,  # the cursor only skips the session's history: this reader starts the turn's stream
        )
        start = {
            "agent": agent,
            SESSION_ID_FIELD: session_id,
            "correlation_id": correlation_id,
            "stream_url": stream_url,
        }
        return self._stream_response(
            req,
            chunks,
            prelude=[encode_sse_event(json.dumps(start), event="start")],
            headers={**_id_headers(session_id, correlation_id), STREAM_URL_RESPONSE_HEADER: stream_url},
        )

    @traced_route("agent/stream/{session_id}")
    async def resume_stream(self, req: Request, client: SupportsEntityClient) -> Response:
        """``GET /api/agent/stream/{session_id}``: follow a session's stream from a cursor.

        The cursor is the ``Last-Event-ID`` header (what ``EventSource`` sends when it reconnects),
        else the ``cursor`` query value; none reads from the start. ``correlation_id`` (query)
        follows one turn; without it the stream ends at the first turn's terminal entry. A cursor
        after the stream's newest entry is refused (400). A followed turn that has committed while
        its stream lacks the end (Valkey lost it, or it has expired) ends with the committed text.
        """
        try:
            session_id = validate_id(req.path_params.get("session_id"), "session_id")
            correlation_id = _optional_id(req.query_params.get("correlation_id"), "correlation_id")
        except StreamInputError as error:
            return json_error(str(error), 400)
        return await self._follow(req, client, session_id, correlation_id)

    @traced_route("streams/{session_id}")
    async def stream_with_token(self, req: Request, client: SupportsEntityClient) -> Response:
        """``GET /api/streams/{session_id}?token=...``: the resume route for browsers, without the function key.

        The token (from a ``stream_url``) grants one turn, or every turn of one session; the turn
        defaults to the token's. A missing, malformed, tampered or expired token is a 401, a token
        for another session or turn a 403; the same work is done for every refusal. Otherwise it
        answers as the resume route does.
        """
        try:
            session_id = validate_id(req.path_params.get("session_id"), "session_id")
            correlation_id = _optional_id(req.query_params.get("correlation_id"), "correlation_id")
            grant = await self.tokens.check(req.query_params.get("token"))
        except StreamTokenError as error:
            return json_error(str(error), 401)
        except StreamInputError as error:
            return json_error(str(error), 400)
        except ValkeyUnavailableError:
            return _valkey_unavailable()
        correlation_id = correlation_id or grant.correlation_id
        if not grant.allows(session_id, correlation_id):
            return json_error("The stream token is for another stream.", 403)
        return await self._follow(req, client, session_id, correlation_id)

    @traced_route("agents/{name}/sessions/{session_id}/turns/{correlation_id}")
    async def turn_status(self, req: Request, client: SupportsEntityClient) -> Response:
        """``GET /api/agents/{name}/sessions/{session_id}/turns/{correlation_id}``: the committed outcome.

        200 with ``status`` ``pending`` (from the moment a route accepted the turn until the entity
        commits it), ``completed`` (with ``response``), ``cancelled`` (with the partial ``response``)
        or ``failed`` (with ``error``); 404 for a turn that was never accepted (or whose record has
        expired with its stream).
        """
        try:
            agent, session_id, correlation_id = self._turn_ids(req)
            outcome = await self._outcome(client, agent, session_id, correlation_id)
        except RequestError as error:
            return json_error(error.message, error.status_code)
        return _outcome_response(agent, session_id, correlation_id, outcome)

    @traced_route("agents/{name}/sessions/{session_id}/turns/{correlation_id}/cancel")
    async def cancel_turn(self, req: Request, client: SupportsEntityClient) -> Response:
        """``POST /api/agents/{name}/sessions/{session_id}/turns/{correlation_id}/cancel``: stop a turn.

        202 with ``status: cancelling`` for a turn that is accepted or running: the instance that
        runs it (any instance) stops the model, and the turn commits its partial answer as
        ``cancelled``. A turn that has ended answers like the status route (200 with its outcome), so
        cancelling is idempotent; an unknown turn is a 404. When Valkey is unreachable the answer is
        503 and nothing was requested.
        """
        try:
            agent, session_id, correlation_id = self._turn_ids(req)
            outcome = await self._outcome(client, agent, session_id, correlation_id)
            if outcome.status == "pending":
                await self.buffer.request_cancel(session_id, correlation_id)
        except RequestError as error:
            return json_error(error.message, error.status_code)
        except ValkeyUnavailableError:
            return _valkey_unavailable()
        if outcome.status != "pending":
            return _outcome_response(agent, session_id, correlation_id, outcome)
        logger.info("Cancel requested for turn %s of %s in session %s", correlation_id, agent, session_id)
        body = {"agent": agent, SESSION_ID_FIELD: session_id, "correlation_id": correlation_id, "status": "cancelling"}
        return JSONResponse(body, status_code=202)

    @traced_route("agents/{name}/sessions/{session_id}")
    async def session_history(self, req: Request, client: SupportsEntityClient) -> Response:
        """``GET /api/agents/{name}/sessions/{session_id}``: the session's turns, and the one that runs.

        200 with ``turns`` (each: ``correlation_id``, ``message``, ``status``, and ``response`` or
        ``error`` once committed; a running turn's message comes from its accepted-turn record)
        and ``running``: the first turn still pending, with a ``stream_url`` to follow it, or null.
        404 for a session the agent does not know.
        """
        try:
            agent = self._agent(req)
            session_id = validate_id(req.path_params.get("session_id"), "session_id")
        except RequestError as error:
            return json_error(error.message, error.status_code)
        except StreamInputError as error:
            return json_error(str(error), 400)
        committed = await read_session_turns(client, agent, session_id)
        try:
            accepted = await self.buffer.accepted_turns(session_id)
        except ValkeyUnavailableError:
            return _valkey_unavailable()
        turns = list(committed or [])
        known = {turn.correlation_id for turn in turns}
        waiting = sorted(
            (record.accepted_at_ms, correlation_id, record.message)
            for correlation_id, record in accepted.items()
            if record.agent == agent and correlation_id not in known
        )
        turns += [SessionTurn(cid, message, TurnOutcome(status="pending")) for _, cid, message in waiting]
        if committed is None and not turns:
            return json_error("No such session for this agent.", 404, agent=agent, session_id=session_id)
        running = next((turn for turn in turns if turn.outcome.status == "pending"), None)
        body: dict[str, Any] = {
            "agent": agent,
            SESSION_ID_FIELD: session_id,
            "turns": [_turn_body(turn) for turn in turns],
            "running": None,
        }
        if running is not None:
            try:
                url = await self._stream_url(req, session_id, running.correlation_id, whole_session=False)
            except ValkeyUnavailableError:
                return _valkey_unavailable()
            body["running"] = {"correlation_id": running.correlation_id, "stream_url": url}
        return JSONResponse(body, status_code=200)

    @traced_route("health")
    async def health(self, req: Request) -> Response:
        """``GET /api/health``: liveness, Valkey reachability (503 when unreachable) and the agents."""
        reachable = await self.buffer.ping()
        body: dict[str, Any] = {
            "status": "healthy" if reachable else "unhealthy",
            "valkey": {"reachable": reachable, "address": self.buffer.settings.address},
            "agents": [{"name": name} for name in self._agents.values()],
            "agent_count": len(self._agents),
        }
        if not reachable:
            body["error"] = "Valkey is unreachable."
        return JSONResponse(body, status_code=200 if reachable else 503)

    @traced_route("chat")
    async def chat_page(self, req: Request) -> Response:
        """``GET /api/chat``: the browser page that streams a turn with ``EventSource``."""
        path = self.chat_page_path
        if path is None or not path.is_file():
            return json_error("The chat page is not installed (static/chat.html).", 404)
        html = await asyncio.to_thread(path.read_text, encoding="utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    # ----- helpers -----

    def _agent(self, req: Request) -> str:
        name = req.path_params.get("name")
        agent = self._agents.get(name.casefold()) if isinstance(name, str) else None
        if agent is None:
            raise RequestError(f"Agent {name!r} is not registered; agents: {', '.join(self._agents.values())}.", 404)
        return agent

    async def _follow(
        self, req: Request, client: SupportsEntityClient, session_id: str, correlation_id: str | None
    ) -> Response:
        """Stream a session (or one turn) from the request's cursor: the body of both resume routes."""
        try:
            cursor = parse_cursor(req.headers.get("last-event-id") or req.query_params.get("cursor"))
            await self.buffer.check_cursor(session_id, cursor)
        except StreamInputError as error:
            return json_error(str(error), 400)
        except ValkeyUnavailableError:
            return _valkey_unavailable()
        chunks = self.buffer.read_stream(
            session_id,
            cursor,
            correlation_id=correlation_id,
            committed_turn=self._committed_turn_lookup(client, session_id, None),
        )
        headers = {SESSION_ID_RESPONSE_HEADER: session_id}
        if correlation_id:
            headers[CORRELATION_ID_RESPONSE_HEADER] = correlation_id
        return self._stream_response(req, chunks, headers=headers)

    async def _stream_url(self, req: Request, session_id: str, correlation_id: str, *, whole_session: bool) -> str:
        """The anonymous stream route's URL for a turn, with a token (path relative to the host).

        Raises:
            ValkeyUnavailableError: If the signing key cannot be read.
        """
        token = await self.tokens.issue(session_id, None if whole_session else correlation_id)
        # The routes live under the host's prefix (/api unless host.json says otherwise): keep it.
        prefix = req.url.path.split("/agents/", 1)[0]
        query = urlencode({"correlation_id": correlation_id, "token": token})
        return f"{prefix}/streams/{session_id}?{query}"

    def _turn_ids(self, req: Request) -> tuple[str, str, str]:
        """``(agent, session_id, correlation_id)`` of a turn route, checked (``RequestError`` when not)."""
        agent = self._agent(req)
        try:
            session_id = validate_id(req.path_params.get("session_id"), "session_id")
            correlation_id = validate_id(req.path_params.get("correlation_id"), "correlation_id")
        except StreamInputError as error:
            raise RequestError(str(error), 400) from None
        return agent, session_id, correlation_id

    async def _outcome(
        self, client: SupportsEntityClient, agent: str, session_id: str, correlation_id: str
    ) -> TurnOutcome:
        """A turn's outcome: the entity's committed state, or ``pending`` for an accepted turn it has not seen.

        Raises:
            RequestError: 503 when the entity does not know the turn and Valkey cannot tell.
        """
        outcome = await read_turn_outcome(client, agent, session_id, correlation_id)
        if outcome.status != "not_found":
            return outcome
        # Accepted but not yet in the entity's state (its signal is still queued)?
        try:
            accepted = await self.buffer.accepted_turn(session_id, correlation_id)
        except ValkeyUnavailableError:
            raise RequestError("Valkey is unavailable; try again shortly.", 503) from None
        if accepted is not None and accepted.agent == agent:
            return TurnOutcome(status="pending", message_count=outcome.message_count)
        return outcome

    async def _start_turn(self, client: SupportsEntityClient, agent: str, run_input: RunInput) -> tuple[str, str]:
        """Record and signal a new turn; its ``(session_id, correlation_id)``.

        Raises:
            ValkeyUnavailableError: If the turn could not be recorded (nothing was started).
            TurnNotStartedError: If the durable backend refused the signal.
        """
        session_id = run_input.session_id or uuid.uuid4().hex
        correlation_id = uuid.uuid4().hex
        accepted_at_ms = int(time.time() * 1000)
        note_turn(session_id, correlation_id)
        request = RunRequest(
            message=run_input.message,
            correlation_id=correlation_id,
            request_response_format=REQUEST_RESPONSE_FORMAT_JSON if run_input.is_json else REQUEST_RESPONSE_FORMAT_TEXT,
            role=run_input.role,
            enable_tool_calls=run_input.enable_tool_calls,
            created_at=datetime.now(UTC),
            # Where the turn streams and the trace it continues: the agent middleware reads them (see
            # travel_agents._turn_failures and _turn_tracing).
            options=turn_options(
                session_id, correlation_id, accepted_at_ms=accepted_at_ms, trace_headers=current_trace_headers()
            ),
        )
        # Recorded first: from the moment the route answers, the status route says "pending".
        await self.buffer.record_turn_accepted(
            session_id, correlation_id, agent, message=run_input.message, accepted_at_ms=accepted_at_ms
        )
        try:
            await client.signal_entity(agent_entity_id(agent, session_id), "run", request.to_dict())
        except Exception as error:
            # The durable backend (task hub storage or scheduler) refused or is unreachable: not the
            # client's mistake, and nothing was started, so the client may simply retry.
            logger.exception("Could not signal the entity of %s for session %s", agent, session_id)
            raise TurnNotStartedError("The turn could not be started; try again shortly.") from error
        logger.info("Started turn %s of %s in session %s", correlation_id, agent, session_id)
        return session_id, correlation_id

    def _committed_turn_lookup(
        self, client: SupportsEntityClient, session_id: str, agent: str | None
    ) -> CommittedTurnLookup:
        """How a stream reader asks a turn's committed outcome: the entity state of the turn's agent."""

        async def committed_turn(correlation_id: str, agent_in_stream: str | None) -> CommittedTurn | None:
            for name in await self._agents_of_turn(session_id, correlation_id, agent or agent_in_stream):
                outcome = await read_turn_outcome(client, name, session_id, correlation_id)
                if outcome.status in ("completed", "cancelled"):
                    return CommittedTurn(status=outcome.status, text=outcome.text or "")
                if outcome.status == "failed":
                    return CommittedTurn(status="failed", error=outcome.error)
                if outcome.status == "pending":
                    return None
            return None

        return committed_turn

    async def _agents_of_turn(self, session_id: str, correlation_id: str, known: str | None) -> list[str]:
        # The agent that ran a turn: named by the route or the stream, else by the turn's record,
        # else any of the registered agents may have it.
        if known is not None and known.casefold() in self._agents:
            return [self._agents[known.casefold()]]
        with contextlib.suppress(ValkeyUnavailableError):
            accepted = await self.buffer.accepted_turn(session_id, correlation_id)
            if accepted is not None and accepted.agent.casefold() in self._agents:
                return [self._agents[accepted.agent.casefold()]]
        return list(self._agents.values())

    async def _wait_for_outcome(
        self, client: SupportsEntityClient, agent: str, session_id: str, correlation_id: str
    ) -> TurnOutcome:
        outcome = TurnOutcome(status="pending")
        for _ in range(self.max_poll_retries):
            await asyncio.sleep(self.poll_interval_seconds)
            try:
                outcome = await read_turn_outcome(client, agent, session_id, correlation_id)
            except Exception as error:  # the state may be momentarily unreadable; keep polling like the built-in
                logger.warning("Reading the state of %s/%s failed: %s", agent, session_id, error)
                continue
            if outcome.status in ("completed", "cancelled", "failed"):
                return outcome
        return outcome

    def _stream_response(
        self, req: Request, chunks: AsyncIterator[StreamChunk], *, headers: dict[str, str], prelude: Sequence[str] = ()
    ) -> DeadlineStreamingResponse:
        settings = self.stream_settings
        # The body ends itself at max_duration_seconds; the response is cut a little later even if
        # the client stopped reading (then the body is never asked for its next part).
        hard_limit = settings.max_duration_seconds + settings.heartbeat_seconds + 5
        if _wants_plain_text(req.headers.get("accept", "")):
            body = text_body(
                chunks, heartbeat_seconds=settings.heartbeat_seconds, max_duration_seconds=settings.max_duration_seconds
            )
            return DeadlineStreamingResponse(
                body, max_seconds=hard_limit, media_type="text/plain; charset=utf-8", headers=headers
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


def _token_scope(req: Request) -> bool:
    """Whether the run call asks for a token to the whole session (``?scope=session``) rather than the turn."""
    scope = req.query_params.get("scope", "turn")
    if scope not in ("turn", "session"):
        raise RequestError("'scope' must be 'turn' or 'session'.")
    return scope == "session"


def _turn_body(turn: SessionTurn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "correlation_id": turn.correlation_id,
        "message": turn.message,
        "status": turn.outcome.status,
    }
    if turn.outcome.status in ("completed", "cancelled"):
        body["response"] = turn.outcome.text
    elif turn.outcome.status == "failed":
        body["error"] = turn.outcome.error
    return body


def _outcome_response(agent: str, session_id: str, correlation_id: str, outcome: TurnOutcome) -> JSONResponse:
    body: dict[str, Any] = {
        "agent": agent,
        SESSION_ID_FIELD: session_id,
        "correlation_id": correlation_id,
        "status": outcome.status,
        "message_count": outcome.message_count,
    }
    if outcome.status == "not_found":
        return json_error("No such turn: it was never accepted by this agent, or it has expired.", 404, **body)
    if outcome.status in ("completed", "cancelled"):
        body["response"] = outcome.text
    elif outcome.status == "failed":
        body["error"] = outcome.error
    return JSONResponse(body, status_code=200)


def _id_headers(session_id: str, correlation_id: str) -> dict[str, str]:
    return {SESSION_ID_RESPONSE_HEADER: session_id, CORRELATION_ID_RESPONSE_HEADER: correlation_id}


def _optional_id(value: str | None, name: str) -> str | None:
    return None if value is None or value == "" else validate_id(value, name)


def _wants_plain_text(accept: str) -> bool:
    media_types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "text/plain" in media_types and "text/event-stream" not in media_types


def _valkey_unavailable() -> JSONResponse:
    return json_error("Valkey is unavailable; try again shortly.", 503)
