"""The HTTP handlers: start a turn, stream it, resume a stream, report a turn's outcome, health, the pages.

Every handler takes the Starlette/FastAPI ``Request`` that Azure Functions' HTTP streaming hands it
(and the durable client where it needs one) and returns a FastAPI response: ``function_app.py``
registers them, and a local host can call the very same methods. What a turn is lives in
``_turns``; the errors a handler raises are answered by the ``route`` decorator.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from agent_framework_durabletask import SESSION_ID_FIELD
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

from valkey_buffer import (
    StreamChunk,
    ValkeyStreamBuffer,
    parse_cursor,
    validate_id,
)

from ._agui_events import AguiTranslator
from ._agui_input import parse_agui_input
from ._agui_workflow_runs import WorkflowAguiApi
from ._errors import RequestError
from ._event_stream import DeadlineStreamingResponse, agui_body, stream_response
from ._pages import html_page
from ._responses import json_error, outcome_json
from ._routes import DEFAULT_ROUTE_PREFIX, Routes, route, route_path
from ._run_input import parse_run_input
from ._settings import RunInputSettings, StreamSettings
from ._sse import encode_sse_event
from ._stream_tokens import StreamTokens
from ._turn_outcome import SupportsEntityClient, TurnOutcome
from ._turns import NewTurn, Turns
from ._workflow_handlers import WorkflowHttpApi

SESSION_ID_RESPONSE_HEADER = "x-session-id"
CORRELATION_ID_RESPONSE_HEADER = "x-correlation-id"
STREAM_URL_RESPONSE_HEADER = "x-stream-url"


class AgentHttpApi:
    """The app's HTTP API over the durable agents and their Valkey streams.

    Args:
        buffer: The stream buffer the agents write to.
        agent_names: The registered agents' names.
        stream_settings: Heartbeat and maximum duration of stream responses.
        poll_interval_seconds: Delay between entity state reads while waiting for a response.
        max_poll_retries: Entity state reads before a waiting run request gives up with ``timeout``.
        chat_page: The HTML file served by :meth:`chat_page`.
        workflow_page: The HTML file served by :meth:`workflow_page`.
        run_input_settings: What a request that starts a turn may ask for (system-role messages).
        route_prefix: The host's route prefix (host.json's ``routePrefix``; see
            ``route_prefix_from_host_json``): span names and ``stream_url`` carry it.
        workflow_names: The hosted workflows, served by :attr:`workflows` (the workflow routes) and
            :attr:`workflow_agui` (their AG-UI route); the resume and token routes read a workflow
            instance's stream until the workflow ends.

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
        workflow_page: Path | None = None,
        run_input_settings: RunInputSettings | None = None,
        route_prefix: str = DEFAULT_ROUTE_PREFIX,
        workflow_names: Sequence[str] = (),
    ) -> None:
        self.turns = Turns(
            buffer=buffer,
            agent_names=agent_names,
            poll_interval_seconds=poll_interval_seconds,
            max_poll_retries=max_poll_retries,
        )
        self.buffer = buffer
        self.stream_settings = stream_settings
        self.chat_page_path = chat_page
        self.workflow_page_path = workflow_page
        self.run_input_settings = run_input_settings or RunInputSettings()
        self.route_prefix = route_prefix
        self.tokens = StreamTokens(
            buffer,
            ttl_seconds=stream_settings.token_ttl_seconds,
            rotation_seconds=stream_settings.token_rotation_seconds,
        )
        self.workflows = WorkflowHttpApi(
            buffer=buffer,
            workflow_names=list(workflow_names),
            stream_settings=stream_settings,
            tokens=self.tokens,
            route_prefix=route_prefix,
        )
        self.workflow_agui = WorkflowAguiApi(self.workflows)

    # ----- routes -----

    @route(Routes.RUN)
    async def run_turn(self, req: Request, client: SupportsEntityClient) -> Response:
        """``POST /api/agents/{name}/run``: start a turn; 202 with its ids, or the committed answer.

        With ``wait_for_response`` the entity state is polled for the committed response, as the
        built-in route does: 200 with ``status: success``, 500 with ``status: failed`` when the agent
        failed, or 202 with ``status: timeout`` when it is still running. ``stream_url`` is where a
        browser follows the turn without the function key (``?scope=session``: any turn of the session).
        """
        turn, whole_session = await self._new_turn(req)
        stream_url = await self._start(client, turn, whole_session=whole_session)
        payload: dict[str, Any] = {
            "response": "Agent request accepted",
            "message": turn.run_input.message,
            SESSION_ID_FIELD: turn.session_id,
            "status": "accepted",
            "correlation_id": turn.correlation_id,
            "stream_url": stream_url,
        }
        status_code = 202
        if turn.run_input.wait_for_response:
            outcome = await self.turns.wait(client, turn.agent, turn.session_id, turn.correlation_id)
            payload, status_code = _waited_answer(payload, outcome)
        return JSONResponse(payload, status_code=status_code, headers=_id_headers(turn.session_id, turn.correlation_id))

    @route(Routes.STREAM)
    async def stream_turn(self, req: Request, client: SupportsEntityClient) -> Response:
        """``POST /api/agents/{name}/stream``: start a turn and stream it live in the same response.

        The ids and the ``stream_url`` (see :meth:`run_turn`) come in the ``x-session-id`` /
        ``x-correlation-id`` / ``x-stream-url`` headers and, for SSE, in a first ``start`` event.
        Valkey is checked before the turn is started: when it is unreachable the answer is 503 and
        no turn runs.
        """
        turn, whole_session = await self._new_turn(req)
        # Every entry of the new turn comes after the stream's current end: follow it from there
        # instead of reading through the session's history. Also checks that Valkey is reachable.
        cursor = await self.buffer.latest_entry_id(turn.session_id)
        stream_url = await self._start(client, turn, whole_session=whole_session)
        chunks = self.buffer.read_stream(
            turn.session_id,
            cursor,
            correlation_id=turn.correlation_id,
            committed_turn=self.turns.committed_lookup(client, turn.session_id, turn.agent),
            resumed=False,  # the cursor only skips the session's history: this reader starts the turn's stream
        )
        start = {
            "agent": turn.agent,
            SESSION_ID_FIELD: turn.session_id,
            "correlation_id": turn.correlation_id,
            "stream_url": stream_url,
        }
        headers = {**_id_headers(turn.session_id, turn.correlation_id), STREAM_URL_RESPONSE_HEADER: stream_url}
        return self._stream(req, chunks, headers=headers, prelude=[encode_sse_event(json.dumps(start), event="start")])

    @route(Routes.AGUI)
    async def agui_run(self, req: Request, client: SupportsEntityClient) -> Response:
        """``POST /api/agents/{name}/ag-ui``: an AG-UI 1.0 run of the agent, streamed as AG-UI events.

        The body is a ``RunAgentInput`` (``threadId`` the session, ``runId`` the turn; see
        ``_agui_input``). A ``runId`` the thread has accepted already re-attaches to that turn
        instead of starting another: from its start, or after ``Last-Event-ID``. Every event's
        SSE ``id`` is a stream entry id (see ``_agui_events``).
        """
        agent = self._agent(req)
        run = await parse_agui_input(req)
        session_id, correlation_id = run.session_id, run.correlation_id
        lookup = self.turns.committed_lookup(client, session_id, agent)
        if await self.buffer.accepted_turn(session_id, correlation_id) is not None:
            cursor = parse_cursor(req.headers.get("last-event-id"))
            await self.buffer.check_cursor(session_id, cursor)
            chunks = self.buffer.read_stream(session_id, cursor, correlation_id=correlation_id, committed_turn=lookup)
        else:
            turn = NewTurn(agent, session_id, correlation_id, run.run_input())
            cursor = await self.buffer.latest_entry_id(session_id)
            await self.turns.start(client, turn)
            chunks = self.buffer.read_stream(
                session_id, cursor, correlation_id=correlation_id, committed_turn=lookup, resumed=False
            )
        settings = self.stream_settings
        body = agui_body(
            chunks,
            AguiTranslator(session_id, correlation_id, run.messages),
            cursor=cursor or "0",
            heartbeat_seconds=settings.heartbeat_seconds,
            max_duration_seconds=settings.max_duration_seconds,
            retry_ms=settings.retry_ms,
        )
        return DeadlineStreamingResponse(
            body,
            max_seconds=settings.max_duration_seconds + settings.heartbeat_seconds + 5,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **_id_headers(session_id, correlation_id)},
        )

    @route(Routes.RESUME)
    async def resume_stream(self, req: Request, client: SupportsEntityClient) -> Response:
        """``GET /api/agent/stream/{session_id}``: follow a session's stream from a cursor.

        The cursor is the ``Last-Event-ID`` header (what ``EventSource`` sends when it reconnects),
        else the ``cursor`` query value; none reads from the start. ``correlation_id`` (query)
        follows one turn; without it the stream ends at the first turn's terminal entry. A cursor
        after the stream's newest entry is refused (400). A followed turn that has committed while
        its stream lacks the end (Valkey lost it, or it has expired) ends with the committed text.
        """
        session_id = validate_id(req.path_params.get("session_id"), "session_id")
        correlation_id = _optional_id(req.query_params.get("correlation_id"), "correlation_id")
        return await self._follow(req, client, session_id, correlation_id)

    @route(Routes.STREAM_WITH_TOKEN)
    async def stream_with_token(self, req: Request, client: SupportsEntityClient) -> Response:
        """``GET /api/streams/{session_id}?token=...``: the resume route for browsers, without the function key.

        The token (from a ``stream_url``) grants one turn, or every turn of one session; the turn
        defaults to the token's. A missing, malformed, tampered or expired token is a 401, a token
        for another session or turn a 403; the same work is done for every refusal. Otherwise it
        answers as the resume route does.
        """
        session_id = validate_id(req.path_params.get("session_id"), "session_id")
        correlation_id = _optional_id(req.query_params.get("correlation_id"), "correlation_id")
        # The token comes in the URL (EventSource cannot send headers) or as ``Authorization: Bearer``
        # (a fetch client: then no host request log holds it).
        grant = await self.tokens.check(req.query_params.get("token") or _bearer_token(req))
        correlation_id = correlation_id or grant.correlation_id
        if not grant.allows(session_id, correlation_id):
            raise RequestError("The stream token is for another stream.", 403)
        return await self._follow(req, client, session_id, correlation_id)

    @route(Routes.TURN)
    async def turn_status(self, req: Request, client: SupportsEntityClient) -> Response:
        """``GET /api/agents/{name}/sessions/{session_id}/turns/{correlation_id}``: the committed outcome.

        200 with ``status`` ``pending`` (from the moment a route accepted the turn until the entity
        commits it), ``completed`` (with ``response``), ``cancelled`` (with the partial ``response``)
        or ``failed`` (with ``error``); 404 for a turn that was never accepted (or whose record has
        expired with its stream).
        """
        agent, session_id, correlation_id = self._turn_ids(req)
        outcome = await self.turns.outcome(client, agent, session_id, correlation_id)
        return _outcome_response(agent, session_id, correlation_id, outcome)

    @route(Routes.TURN_CANCEL)
    async def cancel_turn(self, req: Request, client: SupportsEntityClient) -> Response:
        """``POST /api/agents/{name}/sessions/{session_id}/turns/{correlation_id}/cancel``: stop a turn.

        202 with ``status: cancelling`` for a turn that is accepted or running: the instance that
        runs it (any instance) stops the model, and the turn commits its partial answer as
        ``cancelled``. A turn that has ended answers like the status route (200 with its outcome), so
        cancelling is idempotent; an unknown turn is a 404. When Valkey is unreachable the answer is
        503 and nothing was requested.
        """
        agent, session_id, correlation_id = self._turn_ids(req)
        outcome = await self.turns.cancel(client, agent, session_id, correlation_id)
        if outcome.status != "pending":
            return _outcome_response(agent, session_id, correlation_id, outcome)
        body = {"agent": agent, SESSION_ID_FIELD: session_id, "correlation_id": correlation_id, "status": "cancelling"}
        return JSONResponse(body, status_code=202)

    @route(Routes.SESSION)
    async def session_history(self, req: Request, client: SupportsEntityClient) -> Response:
        """``GET /api/agents/{name}/sessions/{session_id}``: the session's turns, and the one that runs.

        200 with ``turns`` (each: ``correlation_id``, ``message``, ``status``, ``tool_calls`` (a committed
        turn's, each ``call_id``, ``name``, ``arguments``, ``result``), and ``response`` or ``error``
        once committed; a running turn's message comes from its accepted-turn record)
        and ``running``: the first turn still pending, with a ``stream_url`` to follow it, or null.
        404 for a session the agent does not know.
        """
        agent = self._agent(req)
        session_id = validate_id(req.path_params.get("session_id"), "session_id")
        turns = await self.turns.session_turns(client, agent, session_id)
        if turns is None:
            raise RequestError("No such session for this agent.", 404, agent=agent, session_id=session_id)
        body: dict[str, Any] = {
            "agent": agent,
            SESSION_ID_FIELD: session_id,
            "turns": [
                {"correlation_id": turn.correlation_id, "message": turn.message}
                | outcome_json(turn.outcome, message_count=False)
                | {"tool_calls": list(turn.tool_calls)}
                for turn in turns
            ],
            "running": None,
        }
        running = next((turn for turn in turns if turn.outcome.status == "pending"), None)
        if running is not None:
            url = await self._stream_url(session_id, running.correlation_id, whole_session=False)
            body["running"] = {"correlation_id": running.correlation_id, "stream_url": url}
        return JSONResponse(body, status_code=200)

    @route(Routes.HEALTH)
    async def health(self, req: Request) -> Response:
        """``GET /api/health``: liveness, Valkey reachability (503 when unreachable) and the agents."""
        reachable = await self.buffer.ping()
        agents = self.turns.agent_names
        body: dict[str, Any] = {
            "status": "healthy" if reachable else "unhealthy",
            "valkey": {"reachable": reachable, "address": self.buffer.settings.address},
            "agents": [{"name": name} for name in agents],
            "agent_count": len(agents),
        }
        if not reachable:
            body["error"] = "Valkey is unreachable."
        return JSONResponse(body, status_code=200 if reachable else 503)

    @route(Routes.CHAT)
    async def chat_page(self, req: Request) -> Response:
        """``GET /api/chat``: the browser page that streams a turn with ``EventSource``."""
        return await html_page(self.chat_page_path, "The chat page is not installed (static/chat.html).")

    @route(Routes.WORKFLOW_PAGE)
    async def workflow_page(self, req: Request) -> Response:
        """``GET /api/workflow/{name}/page``: the browser page that runs a workflow and shows it live.

        One lane per agent, filled as the agents stream; the draft with Approve and Request changes
        while the workflow waits for a person; Cancel; the outcome. 404 for a workflow not hosted here.
        """
        name = req.path_params.get("name")
        if name not in self.workflows.streams.workflow_names:
            known = ", ".join(self.workflows.streams.workflow_names)
            raise RequestError(f"Workflow {name!r} is not hosted here; workflows: {known}.", 404)
        return await html_page(self.workflow_page_path, "The workflow page is not installed (static/workflow.html).")

    # ----- helpers -----

    async def _new_turn(self, req: Request) -> tuple[NewTurn, bool]:
        """The turn a run or stream request asks for, and whether its token is for the whole session."""
        agent = self._agent(req)
        whole_session = _token_scope(req)
        run_input = await parse_run_input(req, self.run_input_settings)
        return self.turns.new(agent, run_input), whole_session

    async def _start(self, client: SupportsEntityClient, turn: NewTurn, *, whole_session: bool) -> str:
        """Start ``turn``; the ``stream_url`` a browser follows it by."""
        await self.turns.start(client, turn)
        return await self._stream_url(turn.session_id, turn.correlation_id, whole_session=whole_session)

    def _agent(self, req: Request) -> str:
        name = req.path_params.get("name")
        agent = self.turns.agent_named(name)
        if agent is None:
            agents = ", ".join(self.turns.agent_names)
            raise RequestError(f"Agent {name!r} is not registered; agents: {agents}.", 404)
        return agent

    def _turn_ids(self, req: Request) -> tuple[str, str, str]:
        """``(agent, session_id, correlation_id)`` of a turn route, checked."""
        agent = self._agent(req)
        session_id = validate_id(req.path_params.get("session_id"), "session_id")
        correlation_id = validate_id(req.path_params.get("correlation_id"), "correlation_id")
        return agent, session_id, correlation_id

    async def _follow(
        self, req: Request, client: SupportsEntityClient, session_id: str, correlation_id: str | None
    ) -> Response:
        """Stream a session (or one turn) from the request's cursor: the body of both resume routes."""
        if correlation_id is None and self.workflows.streams.workflow_names:
            # A workflow instance's stream holds many turns: read it whole, until the workflow ends.
            workflow = await self.workflows.streams.workflow_of(session_id)
            if workflow is not None:
                return await self.workflows.follow(req, client, workflow, session_id)  # type: ignore[arg-type]
        cursor = parse_cursor(req.headers.get("last-event-id") or req.query_params.get("cursor"))
        await self.buffer.check_cursor(session_id, cursor)
        chunks = self.buffer.read_stream(
            session_id,
            cursor,
            correlation_id=correlation_id,
            committed_turn=self.turns.committed_lookup(client, session_id, None),
        )
        headers = {SESSION_ID_RESPONSE_HEADER: session_id}
        if correlation_id:
            headers[CORRELATION_ID_RESPONSE_HEADER] = correlation_id
        return self._stream(req, chunks, headers=headers)

    def _stream(
        self, req: Request, chunks: AsyncIterator[StreamChunk], *, headers: dict[str, str], prelude: Sequence[str] = ()
    ) -> DeadlineStreamingResponse:
        accept = req.headers.get("accept", "")
        return stream_response(chunks, self.stream_settings, accept=accept, headers=headers, prelude=prelude)

    async def _stream_url(self, session_id: str, correlation_id: str, *, whole_session: bool) -> str:
        """The anonymous stream route's URL for a turn, with a token (path relative to the host).

        Raises:
            ValkeyUnavailableError: If the signing key cannot be read.
        """
        token = await self.tokens.issue(session_id, None if whole_session else correlation_id)
        path = route_path(self.route_prefix, Routes.STREAM_WITH_TOKEN.format(session_id=session_id))
        return f"{path}?{urlencode({'correlation_id': correlation_id, 'token': token})}"


def _waited_answer(accepted: dict[str, Any], outcome: TurnOutcome) -> tuple[dict[str, Any], int]:
    """The run route's answer after waiting, as the built-in route gives it: the accepted payload with
    the outcome (``completed`` is called ``success``), or ``timeout`` while the turn still runs."""
    if outcome.status not in ("completed", "cancelled", "failed"):
        return {**accepted, "response": "Agent is still processing or timed out...", "status": "timeout"}, 202
    answer = {**accepted, "response": None, **outcome_json(outcome)}
    if outcome.status == "completed":
        answer["status"] = "success"
    return answer, 500 if outcome.status == "failed" else 200


def _outcome_response(agent: str, session_id: str, correlation_id: str, outcome: TurnOutcome) -> JSONResponse:
    body = {"agent": agent, SESSION_ID_FIELD: session_id, "correlation_id": correlation_id, **outcome_json(outcome)}
    if outcome.status == "not_found":
        return json_error("No such turn: it was never accepted by this agent, or it has expired.", 404, **body)
    return JSONResponse(body, status_code=200)


def _bearer_token(req: Request) -> str | None:
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _token_scope(req: Request) -> bool:
    """Whether the run call asks for a token to the whole session (``?scope=session``) rather than the turn."""
    scope = req.query_params.get("scope", "turn")
    if scope not in ("turn", "session"):
        raise RequestError("'scope' must be 'turn' or 'session'.")
    return scope == "session"


def _id_headers(session_id: str, correlation_id: str) -> dict[str, str]:
    return {SESSION_ID_RESPONSE_HEADER: session_id, CORRELATION_ID_RESPONSE_HEADER: correlation_id}


def _optional_id(value: str | None, name: str) -> str | None:
    return None if value is None or value == "" else validate_id(value, name)
