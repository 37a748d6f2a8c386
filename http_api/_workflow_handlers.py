"""The workflow routes: start, status, respond, cancel and stream a hosted workflow's instances.

They keep the paths and camelCase JSON of Agent Framework's built-in workflow routes (which take
``func.HttpRequest`` and so are left out of this streaming app) and add streaming: ``stream_url`` on
start, ``steps`` in the status, a cancel that stops the running agent step, and the instance's SSE
stream (``_workflow_stream``). What they do to an instance is in ``_workflow_instances``. Every route
answers an instance of another workflow (or of no workflow) as unknown, as the built-in ones do.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

from valkey_buffer import ValkeyStreamBuffer, parse_cursor

from ._errors import RequestError
from ._event_stream import DeadlineStreamingResponse, sse_body
from ._routes import Routes, route, route_path
from ._run_input import MAX_BODY_BYTES, MAX_MESSAGE_CHARS
from ._settings import StreamSettings
from ._stream_tokens import StreamTokens
from ._turn_outcome import read_turn_outcome
from ._workflow_instances import SupportsWorkflowClient, WorkflowInstances
from ._workflow_status import PendingRequest, WorkflowStatus, is_workflow_end, record_status
from ._workflow_steps import WorkflowStep, workflow_steps
from ._workflow_stream import WorkflowStreams, workflow_chunk_to_sse

INSTANCE_ID_RESPONSE_HEADER = "x-instance-id"


class WorkflowHttpApi:
    """The HTTP API over the app's hosted workflows.

    Args:
        buffer: The stream buffer the workflows' agents write to.
        workflow_names: The hosted workflows (``AgentFunctionApp.workflows``).
        stream_settings: Heartbeat and maximum duration of stream responses.
        tokens: Issues the ``stream_url`` tokens (the agent API's, so the token route accepts them).
        route_prefix: The host's route prefix.
    """

    def __init__(
        self,
        *,
        buffer: ValkeyStreamBuffer,
        workflow_names: list[str],
        stream_settings: StreamSettings,
        tokens: StreamTokens,
        route_prefix: str,
    ) -> None:
        self.buffer = buffer
        self.instances = WorkflowInstances(buffer, workflow_names)
        self.streams = WorkflowStreams(buffer, workflow_names)
        self.stream_settings = stream_settings
        self.tokens = tokens
        self.route_prefix = route_prefix

    @route(Routes.WORKFLOW_RUN)
    async def run(self, req: Request, client: SupportsWorkflowClient) -> Response:
        """``POST /api/workflow/{name}/run`` with ``{"message": ...}``: start an instance.

        202 with ``instanceId``, ``statusQueryGetUri``, ``respondUri`` (a template), ``message`` and
        ``stream_url`` (the anonymous token route, for this instance's stream); 404 for an unknown
        workflow; 400 for a body that is not a JSON object with a non-empty ``message``.
        """
        name = self.instances.workflow_named(req.path_params.get("name"))
        message = await _message_of(req)
        instance_id = await self.instances.start(client, name, message)
        token = await self.tokens.issue(instance_id, None)
        stream_path = route_path(self.route_prefix, Routes.STREAM_WITH_TOKEN.format(session_id=instance_id))
        body = {
            "instanceId": instance_id,
            "statusQueryGetUri": self._url(req, Routes.WORKFLOW_STATUS, name, instance_id),
            "respondUri": self._url(req, Routes.WORKFLOW_RESPOND, name, instance_id, "{requestId}"),
            "message": "Workflow started",
            "stream_url": f"{stream_path}?{urlencode({'token': token})}",
        }
        return JSONResponse(body, status_code=202, headers={INSTANCE_ID_RESPONSE_HEADER: instance_id})

    @route(Routes.WORKFLOW_STATUS)
    async def status(self, req: Request, client: SupportsWorkflowClient) -> Response:
        """``GET /api/workflow/{name}/status/{instanceId}``: the built-in route's fields plus ``steps``.

        ``runtimeStatus``, ``customStatus``, ``output``, ``error``, ``createdTime``,
        ``lastUpdatedTime``, ``pendingHumanInputRequests`` (``requestId``, ``sourceExecutor``,
        ``requestData``, ``requestType``, ``responseType``, ``respondUrl``) while it waits, and
        ``steps``: every agent call so far (``agent``, ``correlationId``, ``status``: running,
        completed, cancelled or failed) from the instance's stream. 404 for an unknown instance or
        one of another workflow.
        """
        name, status = await self._instance(req, client)
        await record_status(self.buffer, status)
        body: dict[str, Any] = {
            "instanceId": status.instance_id,
            "runtimeStatus": status.runtime_status,
            "customStatus": status.custom_status,
            "output": status.output,
            "error": status.error,
            "createdTime": status.created_time,
            "lastUpdatedTime": status.last_updated_time,
        }
        if status.pending:
            body["pendingHumanInputRequests"] = [self._pending_json(req, name, status, p) for p in status.pending]
        steps = workflow_steps(await self.buffer.session_entries(status.instance_id))
        body["steps"] = [await self._committed_step(client, name, status.instance_id, step) for step in steps]
        return _json(body)

    @route(Routes.WORKFLOW_RESPOND)
    async def respond(self, req: Request, client: SupportsWorkflowClient) -> Response:
        """``POST /api/workflow/{name}/respond/{instanceId}/{requestId}``: answer a pending request.

        200 ``{"message", "instanceId", "requestId"}`` once delivered; 400 for a body that does not
        fit the request's response type (for ``trip_planner``: ``{"approved": bool, "feedback":
        str}``); 404 for an unknown instance or request; 409 for a request that was answered already
        or an instance that has ended. Only the first of concurrent answers is delivered.
        """
        _, status = await self._instance(req, client)
        request_id = await self.instances.answer(
            client, status, req.path_params.get("requestId"), await _json_body(req)
        )
        body = {"message": "Response delivered successfully", "instanceId": status.instance_id, "requestId": request_id}
        return _json(body)

    @route(Routes.WORKFLOW_CANCEL)
    async def cancel(self, req: Request, client: SupportsWorkflowClient) -> Response:
        """``POST /api/workflow/{name}/cancel/{instanceId}``: stop an instance and its running agent steps.

        202 ``{"instanceId", "status": "cancelling"}``: the orchestration is terminated, every agent
        step still running is asked to stop (through the buffer's cancel path: its model stops and
        its turn commits as cancelled), and the stream ends with ``workflow_cancelled``. 404 for an
        unknown instance; 409 when it has ended already.
        """
        _, status = await self._instance(req, client)
        await self.instances.cancel(client, status)
        return JSONResponse({"instanceId": status.instance_id, "status": "cancelling"}, status_code=202)

    @route(Routes.WORKFLOW_STREAM)
    async def stream(self, req: Request, client: SupportsWorkflowClient) -> Response:
        """``GET /api/workflow/{name}/stream/{instanceId}``: the instance's stream as SSE, until the workflow ends.

        From ``Last-Event-ID`` (header) or ``cursor`` (query), else from the start. 404 for an
        unknown instance or one of another workflow.
        """
        name, status = await self._instance(req, client)
        return await self.follow(req, client, name, status.instance_id)

    async def follow(self, req: Request, client: SupportsWorkflowClient, name: str, instance_id: str) -> Response:
        """Stream an instance from the request's cursor (the body of this stream route and of the token route)."""
        cursor = parse_cursor(req.headers.get("last-event-id") or req.query_params.get("cursor"))
        await self.buffer.check_cursor(instance_id, cursor)
        settings = self.stream_settings
        body = sse_body(
            self.streams.read(client, name, instance_id, cursor),
            heartbeat_seconds=settings.heartbeat_seconds,
            max_duration_seconds=settings.max_duration_seconds,
            retry_ms=settings.retry_ms,
            encode=workflow_chunk_to_sse,
            ends=is_workflow_end,
        )
        return DeadlineStreamingResponse(
            body,
            max_seconds=settings.max_duration_seconds + settings.heartbeat_seconds + 5,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", INSTANCE_ID_RESPONSE_HEADER: instance_id},
        )

    # ----- helpers -----

    async def _instance(self, req: Request, client: SupportsWorkflowClient) -> tuple[str, WorkflowStatus]:
        name = self.instances.workflow_named(req.path_params.get("name"))
        return name, await self.instances.status(client, name, req.path_params.get("instanceId"))

    async def _committed_step(
        self, client: SupportsWorkflowClient, name: str, instance_id: str, step: WorkflowStep
    ) -> dict[str, Any]:
        """A step as JSON, its status and answer as its agent's entity committed them (the stream's until then).

        A workflow's agent entity is ``dafx-{workflow}-{executor id}``; the executors are named after
        their agents (``AgentExecutor``'s default), so the stream's agent name finds it.
        """
        shown = step.to_json()
        if step.agent is None:
            return shown
        outcome = await read_turn_outcome(client, f"{name}-{step.agent}", instance_id, step.correlation_id)
        if outcome.is_committed:
            shown["status"] = outcome.status
            if outcome.status == "failed":
                shown["error"] = outcome.error
            else:
                shown["response"] = outcome.text
        return shown

    def _url(self, req: Request, template: str, name: str, instance_id: str, request_id: str | None = None) -> str:
        path = template.format(name=name, instanceId=instance_id, requestId=request_id)
        return str(req.base_url).rstrip("/") + route_path(self.route_prefix, path)

    def _pending_json(self, req: Request, name: str, status: WorkflowStatus, pending: PendingRequest) -> dict[str, Any]:
        return {
            "requestId": pending.request_id,
            "sourceExecutor": pending.source_executor,
            "requestData": pending.data,
            "requestType": pending.request_type,
            "responseType": pending.response_type,
            "respondUrl": self._url(req, Routes.WORKFLOW_RESPOND, name, status.instance_id, pending.request_id),
        }


def _json(body: dict[str, Any], status_code: int = 200) -> JSONResponse:
    return JSONResponse(json.loads(json.dumps(body, default=str)), status_code=status_code)


async def _json_body(req: Request) -> Any:
    raw = await req.body()
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(f"The body is larger than {MAX_BODY_BYTES} bytes.", 413)
    try:
        return json.loads(raw)
    except ValueError as error:
        raise RequestError(f"The body must be JSON: {error}.") from error


async def _message_of(req: Request) -> str:
    body = await _json_body(req)
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip():
        raise RequestError("The body must be a JSON object with a non-empty string 'message'.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise RequestError(f"'message' must be at most {MAX_MESSAGE_CHARS} characters.")
    return message
