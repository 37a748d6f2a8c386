"""What the workflow routes do to an instance, without HTTP: start it, read it, answer it, cancel it.

The workflow routes (and an AG-UI route for workflows) call these; each raises ``RequestError``
with the status code and reason a client should get.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from typing import Any, Protocol

from agent_framework_durabletask._workflows.naming import workflow_orchestrator_name
from agent_framework_durabletask._workflows.serialization import resolve_type

from travel_agents import WORKFLOW_CANCEL_ID
from valkey_buffer import ValkeyStreamBuffer, validate_id

from ._errors import RequestError
from ._workflow_status import (
    INPUT_RECEIVED,
    START_EVENT_ID,
    WORKFLOW_STARTED,
    WorkflowStatus,
    input_received_event_id,
    record_status,
    workflow_status_of,
)
from ._workflow_steps import workflow_steps
from ._workflow_stream import event_data


class SupportsWorkflowClient(Protocol):
    """The durable client calls the workflow routes make (``DurableOrchestrationClient`` has them)."""

    async def start_new(
        self, orchestration_function_name: str, instance_id: str | None = None, client_input: Any = None
    ) -> str:
        """Start an orchestration instance."""
        ...

    async def get_status(self, instance_id: str) -> Any:
        """An instance's status (falsy when unknown)."""
        ...

    async def raise_event(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        """Raise an external event for a running instance."""
        ...

    async def terminate(self, instance_id: str, reason: str) -> None:
        """Terminate a running instance."""
        ...

    async def read_entity_state(self, entity_id: Any, /) -> Any:
        """Read an entity's state (an agent step's committed answer)."""
        ...


class WorkflowInstances:
    """Starts, reads, answers and cancels instances of the hosted workflows.

    Args:
        buffer: The stream buffer the workflows' agents write to.
        workflow_names: The hosted workflows.
    """

    def __init__(self, buffer: ValkeyStreamBuffer, workflow_names: list[str]) -> None:
        self.buffer = buffer
        self.workflow_names = list(workflow_names)

    def workflow_named(self, name: object) -> str:
        """``name`` if it is a hosted workflow.

        Raises:
            RequestError: 404, naming the hosted workflows.
        """
        if not isinstance(name, str) or name not in self.workflow_names:
            raise RequestError(
                f"Workflow {name!r} is not hosted here; workflows: {', '.join(self.workflow_names)}.", 404
            )
        return name

    async def start(self, client: SupportsWorkflowClient, name: str, message: str) -> str:
        """Start an instance of ``name`` with ``message``; its instance id.

        The stream's first entry (``workflow_started``) is written before the orchestration starts:
        it tells the token route that the session is an instance, and which workflow's.

        Raises:
            ValkeyUnavailableError: If Valkey cannot be reached (nothing was started).
        """
        instance_id = uuid.uuid4().hex
        await self.buffer.append_event_once(
            instance_id, START_EVENT_ID, WORKFLOW_STARTED, {"workflow": name, "instance_id": instance_id}
        )
        await client.start_new(workflow_orchestrator_name(name), instance_id=instance_id, client_input=message)
        return instance_id

    async def status(self, client: SupportsWorkflowClient, name: str, instance_id: object) -> WorkflowStatus:
        """The committed status of an instance of ``name``.

        Raises:
            InvalidIdError: If the id is invalid (400).
            RequestError: 404 for an unknown instance or one of another workflow.
        """
        instance_id = validate_id(instance_id, "instanceId")
        status = workflow_status_of(await client.get_status(instance_id), name)
        if status is None:
            raise RequestError(f"No instance {instance_id!r} of workflow {name!r}.", 404)
        return status

    async def answer(
        self, client: SupportsWorkflowClient, status: WorkflowStatus, request_id: object, body: Any
    ) -> str:
        """Deliver ``body`` as the answer to a pending request, once; the request id.

        Raises:
            InvalidIdError: If the request id is invalid (400).
            RequestError: 400 for a body that does not fit the response type, 404 for an unknown
                request, 409 for one answered already or an instance that has ended.
        """
        request_id = validate_id(request_id, "requestId")
        if status.end_event is not None:
            raise RequestError(f"The workflow instance has ended ({status.runtime_status}).", 409)
        pending = next((p for p in status.pending if p.request_id == request_id), None)
        if pending is None:
            if await self._was_answered(status.instance_id, request_id):
                raise RequestError(f"Request {request_id!r} was answered already; it is no longer pending.", 409)
            raise RequestError(f"No pending request {request_id!r} in this instance.", 404)
        response = fitting(body, pending.response_type)
        await record_status(self.buffer, status)  # the request is in the stream before its answer
        # The answer is claimed in the stream (written once): of concurrent answers, one is delivered.
        claimed = await self.buffer.append_event_once(
            status.instance_id,
            input_received_event_id(request_id),
            INPUT_RECEIVED,
            {"request_id": request_id, "response": response},
        )
        if claimed is None:
            raise RequestError(f"Request {request_id!r} was answered already; it is no longer pending.", 409)
        await client.raise_event(status.instance_id, request_id, response)
        return request_id

    async def cancel(self, client: SupportsWorkflowClient, status: WorkflowStatus) -> None:
        """Terminate the instance and stop its running agent steps (their turns commit as cancelled).

        Raises:
            RequestError: 409 when the instance has ended already.
            ValkeyUnavailableError: If Valkey cannot be reached (nothing was cancelled).
        """
        if status.end_event is not None:
            raise RequestError(f"The workflow instance has ended already ({status.runtime_status}).", 409)
        # First the steps that start from now on (their entity calls may be on their way already)...
        await self.buffer.request_cancel(status.instance_id, WORKFLOW_CANCEL_ID)
        await client.terminate(status.instance_id, "cancelled through the cancel route")
        # ...then the running ones: each stops its model and commits its partial answer as cancelled.
        for step in workflow_steps(await self.buffer.session_entries(status.instance_id)):
            if step.status == "running":
                await self.buffer.request_cancel(status.instance_id, step.correlation_id)

    async def _was_answered(self, instance_id: str, request_id: str) -> bool:
        entries = await self.buffer.session_entries(instance_id)
        return any(
            entry.kind == "event"
            and entry.event == INPUT_RECEIVED
            and event_data(entry).get("request_id") == request_id
            for entry in entries
        )


def fitting(body: Any, response_type: str | None) -> Any:
    """``body`` if it fits the dataclass the request's response type names: every required field, no
    unknown one, each value of its field's type (bool, str, int, float). Other types pass unchecked.

    Raises:
        RequestError: 400, naming the field that does not fit.
    """
    kind = resolve_type(response_type) if response_type else None
    if not isinstance(kind, type) or not dataclasses.is_dataclass(kind):
        return body
    if not isinstance(body, dict):
        raise RequestError(f"The response must be a JSON object fitting {kind.__name__}.")
    hints = typing.get_type_hints(kind)
    fields = {field.name: field for field in dataclasses.fields(kind)}
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise RequestError(f"Unknown field(s) {', '.join(unknown)} for {kind.__name__}; fields: {', '.join(fields)}.")
    for field_name, field in fields.items():
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if field_name not in body:
            if required:
                raise RequestError(f"'{field_name}' is required in a {kind.__name__} response.")
            continue
        if not _is_of(body[field_name], hints.get(field_name, Any)):
            raise RequestError(f"'{field_name}' must be of type {getattr(hints.get(field_name), '__name__', '?')}.")
    return body


def _is_of(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_is_of(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True
