"""``POST /api/workflow/{name}/ag-ui``: a hosted workflow driven by AG-UI 1.0 runs, one thread per instance.

The thread's first run starts the workflow (``threadId`` = instance id, the last user message its
input); a run ends where the workflow waits for a person (outcome ``interrupt``) or where it ends;
the next run carries ``resume`` entries that answer the interrupt (``resolved``, the payload being
the response) or give it up (``cancelled``: the workflow is cancelled). What the runs stream is the
instance's stream, translated by ``_agui_workflow_events``.

Each run is remembered in the stream itself: the first run's id is in the ``workflow_started`` entry,
a resuming run's in the ``input_received`` entry of the answer it gave (both written once: a second
answer to the same request is refused). A run's part of the stream begins after the entry that ended
the run before it: the start, or the request its (first) answer answers. A run posted again (same
``threadId`` and ``runId``) re-attaches there, or after ``Last-Event-ID``, as the agent route does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ag_ui.core import ResumeEntry, RunAgentInput
from agent_framework_durabletask._workflows.naming import workflow_orchestrator_name
from azurefunctions.extensions.http.fastapi import Request, Response

from valkey_buffer import InvalidIdError, StreamChunk, parse_cursor, validate_id

from ._agui_input import last_user_text, read_run_agent_input
from ._agui_workflow_events import WorkflowAguiTranslator, ends_run
from ._errors import RequestError
from ._event_stream import DeadlineStreamingResponse, agui_body
from ._routes import Routes, route
from ._workflow_handlers import INSTANCE_ID_RESPONSE_HEADER, WorkflowHttpApi
from ._workflow_instances import SupportsWorkflowClient, fitting
from ._workflow_status import (
    INPUT_RECEIVED,
    INPUT_REQUESTED,
    START_EVENT_ID,
    WORKFLOW_STARTED,
    PendingRequest,
    WorkflowStatus,
    input_received_event_id,
    record_status,
)
from ._workflow_stream import event_data

RUN_ID_FIELD = "run_id"
"""The field of ``workflow_started`` and ``input_received`` data that names the AG-UI run that wrote them."""

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class WorkflowAguiApi:
    """The AG-UI route of the hosted workflows, over the workflow API's streams and settings.

    Args:
        workflows: The workflow routes' API (its buffer, instance streams, stream settings, prefix).
    """

    def __init__(self, workflows: WorkflowHttpApi) -> None:
        self.workflows = workflows
        self.instances = workflows.instances
        self.buffer = workflows.buffer
        self.route_prefix = workflows.route_prefix

    @route(Routes.WORKFLOW_AGUI)
    async def run(self, req: Request, client: SupportsWorkflowClient) -> Response:
        """``POST /api/workflow/{name}/ag-ui``: an AG-UI 1.0 run of a workflow instance, streamed as AG-UI events.

        The body is a ``RunAgentInput``. A new thread starts the workflow; a run with ``resume``
        entries answers the interrupts that ended the previous run; a ``runId`` the thread has seen
        re-attaches (from the run's start, or after ``Last-Event-ID``). 404 for an unknown workflow
        or an interrupt that was never asked; 409 for an interrupt that is no longer pending, a
        workflow that has ended, or a new run that neither starts nor resumes; 400 for bad input.
        """
        name = self.instances.workflow_named(req.path_params.get("name"))
        run = await read_run_agent_input(req)
        instance_id, run_id = run.thread_id, run.run_id
        entries = await self._instance_entries(name, instance_id)
        if not entries:
            started = await self._start(client, name, run)
            entries = [started] if started is not None else await self._instance_entries(name, instance_id)
        opening = _run_opening(entries, run_id)
        if opening is not None:
            cursor = await self._reattach_cursor(req, instance_id, entries, opening)
        elif run.resume:
            cursor = await self._resume(client, name, instance_id, run_id, run.resume, entries)
        else:
            raise await self._not_a_run(client, name, instance_id)
        return self._stream(client, name, run, cursor)

    # ----- the run's start -----

    async def _start(self, client: SupportsWorkflowClient, name: str, run: RunAgentInput) -> StreamChunk | None:
        """Start the instance ``threadId`` names; its ``workflow_started`` entry, ``None`` if another run won."""
        if run.resume:
            raise RequestError(f"No instance {run.thread_id!r} of workflow {name!r}: there is nothing to resume.", 404)
        message = last_user_text(run)
        if not message:
            raise RequestError("The first run of a workflow thread needs a user message: the workflow's input.")
        existing = await client.get_status(run.thread_id)
        if existing and isinstance(getattr(existing, "name", None), str):
            raise RequestError(f"An orchestration {run.thread_id!r} exists already; use another threadId.", 409)
        data = {"workflow": name, "instance_id": run.thread_id, RUN_ID_FIELD: run.run_id}
        entry_id = await self.buffer.append_event_once(run.thread_id, START_EVENT_ID, WORKFLOW_STARTED, data)
        if entry_id is None:
            return None
        await client.start_new(workflow_orchestrator_name(name), instance_id=run.thread_id, client_input=message)
        return StreamChunk(entry_id=entry_id, kind="event", event=WORKFLOW_STARTED, data=json.dumps(data))

    # ----- a run that answers interrupts -----

    async def _resume(
        self,
        client: SupportsWorkflowClient,
        name: str,
        instance_id: str,
        run_id: str,
        resume: Sequence[ResumeEntry],
        entries: Sequence[StreamChunk],
    ) -> str:
        """Deliver the resume entries' answers (each claimed once); the entry id the run begins after.

        The run begins where the previous one ended: after the request for the first interrupt it
        answers. Another request asked at the same time comes after it, so the run ends at once with
        that one, and nothing the answers set off is missed by the runs that follow.
        """
        status = await self.instances.status(client, name, instance_id)
        if status.end_event is not None:
            raise RequestError(f"The workflow has ended ({status.runtime_status}): there is nothing to resume.", 409)
        if len({entry.interrupt_id for entry in resume}) < len(resume):
            raise RequestError("The resume entries answer one interrupt twice.")
        answers = [(entry, _answer(entry, status, entries)) for entry in resume]
        await record_status(self.buffer, status)  # the requests are in the stream before their answers
        first_claim = ""
        for entry, response in answers:
            cancelled = entry.status == "cancelled"
            data: dict[str, object] = {"request_id": entry.interrupt_id, "response": response, RUN_ID_FIELD: run_id}
            if cancelled:
                data["cancelled"] = True
            claimed = await self.buffer.append_event_once(
                instance_id, input_received_event_id(entry.interrupt_id), INPUT_RECEIVED, data
            )
            if claimed is None:
                raise RequestError(f"Interrupt {entry.interrupt_id!r} was answered already: no longer pending.", 409)
            first_claim = first_claim or claimed
            if cancelled:
                await self.instances.cancel(client, status)  # as the cancel route does
                break
            await client.raise_event(instance_id, entry.interrupt_id, response)
        # Recorded above; were the stream to have lost it since, the run begins at its answer.
        opening = _request_entry(await self.buffer.session_entries(instance_id), resume[0].interrupt_id)
        return opening or first_claim

    # ----- a run seen before -----

    async def _reattach_cursor(
        self, req: Request, instance_id: str, entries: Sequence[StreamChunk], opening: str
    ) -> str:
        """Where a run posted again reads from: ``Last-Event-ID`` within the run, else the run's start.

        A cursor at or after the run's end re-reads that end, so the client gets the run's outcome
        and never the next run's entries.
        """
        last = parse_cursor(req.headers.get("last-event-id"))
        await self.buffer.check_cursor(instance_id, last)
        cursor = opening if last is None or _order(last) < _order(opening) else last
        run_part = [entry for entry in entries if entry.entry_id and _order(entry.entry_id) > _order(opening)]
        end = next((index for index, entry in enumerate(run_part) if ends_run(entry)), None)
        if end is not None and _order(cursor) >= _order(run_part[end].entry_id):
            cursor = run_part[end - 1].entry_id if end > 0 else opening
        return cursor

    async def _not_a_run(self, client: SupportsWorkflowClient, name: str, instance_id: str) -> RequestError:
        """The refusal of a new run without ``resume`` on a thread whose workflow runs already."""
        status = await self.instances.status(client, name, instance_id)
        if status.end_event is not None:
            return RequestError(
                f"The workflow has ended ({status.runtime_status}); start another thread to run it again.", 409
            )
        if status.pending:
            ids = ", ".join(request.request_id for request in status.pending)
            return RequestError(f"The workflow waits for input: resume its interrupt(s) {ids}.", 409)
        return RequestError(
            "The workflow runs already: re-attach with the runId that started or resumed it, "
            "or wait for its interrupt and resume it.",
            409,
        )

    # ----- helpers -----

    async def _instance_entries(self, name: str, instance_id: str) -> list[StreamChunk]:
        """The instance's stream entries; empty for a new thread. 404/409 for a stream of something else."""
        entries = await self.buffer.session_entries(instance_id)
        if not entries:
            return []
        first = entries[0]
        if first.kind != "event" or first.event != WORKFLOW_STARTED:
            raise RequestError(f"Thread {instance_id!r} is a chat session, not a workflow instance.", 409)
        if event_data(first).get("workflow") != name:
            raise RequestError(f"No instance {instance_id!r} of workflow {name!r}.", 404)
        return entries

    def _stream(self, client: SupportsWorkflowClient, name: str, run: RunAgentInput, cursor: str) -> Response:
        settings = self.workflows.stream_settings
        translator = WorkflowAguiTranslator(run.thread_id, run.run_id, tuple(run.messages))
        body = agui_body(
            self.workflows.streams.read(client, name, run.thread_id, cursor),
            translator,
            cursor=cursor,
            heartbeat_seconds=settings.heartbeat_seconds,
            max_duration_seconds=settings.max_duration_seconds,
            retry_ms=settings.retry_ms,
            ends=lambda _: translator.finished,
        )
        return DeadlineStreamingResponse(
            body,
            max_seconds=settings.max_duration_seconds + settings.heartbeat_seconds + 5,
            media_type="text/event-stream",
            headers={**_SSE_HEADERS, INSTANCE_ID_RESPONSE_HEADER: run.thread_id},
        )


def _run_opening(entries: Sequence[StreamChunk], run_id: str) -> str | None:
    """The id of the entry a run began after: its ``workflow_started``, or the request its first answer answers."""
    for entry in entries:
        if entry.kind != "event" or event_data(entry).get(RUN_ID_FIELD) != run_id:
            continue
        if entry.event == WORKFLOW_STARTED:
            return entry.entry_id
        if entry.event == INPUT_RECEIVED:
            return _request_entry(entries, str(event_data(entry).get("request_id")))
    return None


def _request_entry(entries: Sequence[StreamChunk], request_id: str) -> str | None:
    """The id of the ``input_requested`` entry of a request."""
    for entry in entries:
        if (
            entry.kind == "event"
            and entry.event == INPUT_REQUESTED
            and event_data(entry).get("request_id") == request_id
        ):
            return entry.entry_id
    return None


def _answer(entry: ResumeEntry, status: WorkflowStatus, entries: Sequence[StreamChunk]) -> Any:
    """The response a resume entry delivers (``None`` for ``cancelled``), checked against its pending request."""
    try:
        request_id = validate_id(entry.interrupt_id, "interruptId")
    except InvalidIdError as error:
        raise RequestError(str(error)) from None
    pending: PendingRequest | None = next((p for p in status.pending if p.request_id == request_id), None)
    if pending is None:
        answered = any(
            chunk.kind == "event"
            and chunk.event == INPUT_RECEIVED
            and event_data(chunk).get("request_id") == request_id
            for chunk in entries
        )
        if answered:
            raise RequestError(f"Interrupt {request_id!r} was answered already; it is no longer pending.", 409)
        raise RequestError(f"No pending interrupt {request_id!r} in this workflow instance.", 404)
    if entry.status == "cancelled":
        return None
    return fitting(entry.payload, pending.response_type)


def _order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
