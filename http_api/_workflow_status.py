"""A workflow instance's committed status, and the workflow-level entries of its stream recorded from it.

The orchestration's status is the truth about a workflow: whether it waits for a person (the pending
requests in its custom status) and how it ended. The stream learns of it from whoever reads that
status (a stream reader of the instance whose stream went quiet, the status, respond and cancel
routes): each appends what it saw as a session event that is written once per stream
(``ValkeyStreamBuffer.append_event_once``), so the entries get real ids, in the order the facts
became known, and a reader resumes across them like across text.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from agent_framework_durabletask._workflows.naming import workflow_orchestrator_name
from agent_framework_durabletask._workflows.serialization import (
    deserialize_value,
    deserialize_workflow_output,
    strip_pickle_markers,
)

from valkey_buffer import StreamChunk, ValkeyStreamBuffer

from ._workflow_steps import workflow_steps

logger = logging.getLogger(__name__)

WORKFLOW_STARTED = "workflow_started"
STEP_STARTED = "step_started"
INPUT_REQUESTED = "input_requested"
INPUT_RECEIVED = "input_received"
WORKFLOW_COMPLETED = "workflow_completed"
WORKFLOW_FAILED = "workflow_failed"
WORKFLOW_CANCELLED = "workflow_cancelled"
WORKFLOW_ENDS = frozenset({WORKFLOW_COMPLETED, WORKFLOW_FAILED, WORKFLOW_CANCELLED})

# The session-event ids: one start and one end per instance, one request and one answer per request id.
START_EVENT_ID = "workflow:start"
END_EVENT_ID = "workflow:end"

_ENDED = {
    "Completed": WORKFLOW_COMPLETED,
    "Failed": WORKFLOW_FAILED,
    "Terminated": WORKFLOW_CANCELLED,
    "Canceled": WORKFLOW_CANCELLED,
}

# A cancelled workflow's end waits for its running steps' ends (their turns commit as cancelled within
# a fraction of a second), so that readers see them before the end; a step that never ends (its host
# died) holds the end back this long at most.
STEP_END_GRACE_SECONDS = 5.0


def _ended_within(status: WorkflowStatus, seconds: float) -> bool:
    try:
        updated = datetime.fromisoformat(status.last_updated_time or "")
    except ValueError:
        return False
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    return (datetime.now(UTC) - updated).total_seconds() < seconds


def input_requested_event_id(request_id: str) -> str:
    """The session-event id of a request's ``input_requested`` entry."""
    return f"input:{request_id}"


def input_received_event_id(request_id: str) -> str:
    """The session-event id of a request's ``input_received`` entry (the claim of the one answer)."""
    return f"answer:{request_id}"


def is_workflow_end(chunk: StreamChunk) -> bool:
    """Whether a stream entry ends a workflow instance's stream (completed, failed or cancelled)."""
    return chunk.kind == "event" and chunk.event in WORKFLOW_ENDS


class SupportsStatusClient(Protocol):
    """The durable client calls the workflow routes make."""

    async def get_status(self, instance_id: str) -> Any:
        """The instance's ``DurableOrchestrationStatus`` (falsy when unknown)."""
        ...


@dataclass(frozen=True)
class PendingRequest:
    """A request for human input the instance waits on.

    Attributes:
        request_id: The id to answer it by (the external event's name).
        source_executor: The executor that asked.
        data: The request's data as JSON (for ``trip_planner``: ``{"draft": ..., "round": ...}``).
        request_type: The request data's type (``module:Class``).
        response_type: The type the answer must fit (``module:Class``).
    """

    request_id: str
    source_executor: str | None
    data: Any
    request_type: str | None
    response_type: str | None


@dataclass(frozen=True)
class WorkflowStatus:
    """What the orchestration's committed status says about a workflow instance.

    Attributes:
        instance_id: The instance.
        runtime_status: The Durable Functions runtime status name (``Running``, ``Completed``...).
        custom_status: The custom status as the orchestration set it.
        output: The workflow's outputs (a list, as the framework returns them) once completed.
        error: The failure message once failed.
        pending: The requests for human input it waits on.
        created_time: ISO 8601, if known.
        last_updated_time: ISO 8601, if known.
    """

    instance_id: str
    runtime_status: str | None
    custom_status: Any
    output: Any
    error: str | None
    pending: tuple[PendingRequest, ...]
    created_time: str | None
    last_updated_time: str | None

    @property
    def end_event(self) -> str | None:
        """The stream event for how the instance ended, ``None`` while it has not."""
        return _ENDED.get(self.runtime_status or "")


def _name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "name", value))


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def to_json(value: Any) -> Any:
    """A workflow value as plain JSON: dataclasses and Pydantic models as dicts, markers removed."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return to_json(dump())
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _request_data(raw: Any) -> Any:
    # The data comes from the instance's own custom status (trusted: written by its executor).
    try:
        return to_json(deserialize_value(raw))
    except Exception:
        return to_json(strip_pickle_markers(raw))


def workflow_status_of(status: Any, workflow_name: str) -> WorkflowStatus | None:
    """The instance's status if it exists and is an instance of ``workflow_name``, else ``None``."""
    if not status or not isinstance(getattr(status, "name", None), str):
        return None
    if status.name.casefold() != workflow_orchestrator_name(workflow_name).casefold():
        return None
    runtime = _name(status.runtime_status)
    custom = status.custom_status
    pending: list[PendingRequest] = []
    requests = custom.get("pending_requests") if isinstance(custom, dict) else None
    if isinstance(requests, dict) and runtime in ("Running", "Pending"):
        for key, request in requests.items():
            if isinstance(request, dict):
                pending.append(
                    PendingRequest(
                        request_id=str(request.get("request_id") or key),
                        source_executor=request.get("source_executor_id"),
                        data=_request_data(request.get("data")),
                        request_type=request.get("request_type"),
                        response_type=request.get("response_type"),
                    )
                )
    output = None
    error = None
    if runtime == "Failed":
        error = str(status.output) if status.output is not None else "the workflow failed"
    elif status.output is not None:
        try:
            output = to_json(deserialize_workflow_output(status.output))
        except Exception:
            output = to_json(strip_pickle_markers(status.output))
    if isinstance(requests, dict):
        # The request data is pickled in the custom status: shown decoded, as in pendingHumanInputRequests.
        decoded = {
            key: {**request, "data": _request_data(request.get("data"))} if isinstance(request, dict) else request
            for key, request in requests.items()
        }
        custom = {**custom, "pending_requests": decoded}
    return WorkflowStatus(
        instance_id=status.instance_id,
        runtime_status=runtime,
        custom_status=custom,
        output=output,
        error=error,
        pending=tuple(pending),
        created_time=_iso(getattr(status, "created_time", None)),
        last_updated_time=_iso(getattr(status, "last_updated_time", None)),
    )


async def record_status(buffer: ValkeyStreamBuffer, status: WorkflowStatus) -> None:
    """Append what ``status`` says to the instance's stream, each fact once: pending requests and the end."""
    for request in status.pending:
        await buffer.append_event_once(
            status.instance_id,
            input_requested_event_id(request.request_id),
            INPUT_REQUESTED,
            {
                "request_id": request.request_id,
                "source_executor": request.source_executor,
                "request_data": request.data,
                "response_type": request.response_type,
            },
        )
    event = status.end_event
    if event is None:
        return
    if event == WORKFLOW_CANCELLED and _ended_within(status, STEP_END_GRACE_SECONDS):
        steps = workflow_steps(await buffer.session_entries(status.instance_id))
        if any(step.status == "running" for step in steps):
            return  # recorded by the next look, once the running steps have ended
    data: dict[str, object] = {"runtime_status": status.runtime_status}
    if event == WORKFLOW_COMPLETED:
        data["output"] = status.output
    elif event == WORKFLOW_FAILED:
        data["error"] = status.error
    else:
        data["reason"] = to_json(status.output)
    await buffer.append_event_once(status.instance_id, END_EVENT_ID, event, data)
