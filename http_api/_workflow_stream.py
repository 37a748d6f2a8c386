"""A workflow instance's stream: every step's entries and the workflow's own, read until the workflow ends.

One stream per instance (``agent-stream:{instanceId}``): each agent call of the workflow is a turn
of its own in it (its correlation id is the step's lane), next to the workflow-level session events
(see ``_workflow_status``). :class:`WorkflowStreams` reads it whole with
``ValkeyStreamBuffer.read_session``, ending at ``workflow_completed``, ``workflow_failed`` or
``workflow_cancelled``; when the stream goes quiet it reads the orchestration's committed status and
records what the stream lacks (a pending request, the end), which then arrives like any entry.

Over SSE every event's ``data`` is a JSON object, so a client knows which step speaks (see
:func:`workflow_chunk_to_sse` and docs/workflows.md).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from valkey_buffer import StreamChunk, ValkeyStreamBuffer

from ._sse import encode_sse_event
from ._workflow_status import (
    WORKFLOW_STARTED,
    SupportsStatusClient,
    is_workflow_end,
    record_status,
    workflow_status_of,
)

# How long a quiet instance stream waits before the orchestration's status is read again.
STATUS_CHECK_SECONDS = 0.5

_TURN_ENDS = {"done": "step_completed", "cancelled": "step_cancelled", "error": "step_failed"}


def event_data(chunk: StreamChunk) -> dict[str, Any]:
    """A session event's ``data`` as a dict (an unreadable payload as empty)."""
    try:
        data = json.loads(chunk.data or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def workflow_event(chunk: StreamChunk) -> tuple[str, dict[str, Any]]:
    """The SSE event name and JSON payload of one entry of a workflow instance's stream.

    Text and tool entries and a step's end carry ``correlation_id`` (the step's lane) and ``agent``;
    a turn's ``done``/``cancelled``/``error`` become ``step_completed``/``step_cancelled``/``step_failed``.
    A synthetic ``error`` (the reader gave up, no entry id) stays ``error``.
    """
    lane = {"correlation_id": chunk.correlation_id, "agent": chunk.agent}
    if chunk.kind == "event":
        # A step's event says which lane it opens; a workflow-level one carries its data alone.
        payload = {**lane, **event_data(chunk)} if chunk.correlation_id else event_data(chunk)
        return chunk.event or "event", payload
    if chunk.kind == "error" and not chunk.entry_id and not chunk.correlation_id:
        return "error", {"error": chunk.error or "error"}
    if chunk.kind in _TURN_ENDS:
        payload = {**lane, "error": chunk.error} if chunk.kind == "error" else lane
        return _TURN_ENDS[chunk.kind], payload
    if chunk.kind in ("tool_call", "tool_result"):
        return chunk.kind, {**lane, **chunk.tool_json()}
    return chunk.kind, {**lane, "text": chunk.text}


def workflow_chunk_to_sse(chunk: StreamChunk) -> str:
    """Encode one entry of a workflow instance's stream as SSE (``id`` = entry id, ``data`` = JSON)."""
    name, payload = workflow_event(chunk)
    return encode_sse_event(json.dumps(payload, ensure_ascii=False), event=name, id=chunk.entry_id or None)


class WorkflowStreams:
    """Reads workflow instances' streams and tells an instance's stream from a chat session's.

    Args:
        buffer: The app's stream buffer.
        workflow_names: The hosted workflows.
    """

    def __init__(self, buffer: ValkeyStreamBuffer, workflow_names: list[str]) -> None:
        self.buffer = buffer
        self.workflow_names = list(workflow_names)

    async def workflow_of(self, session_id: str) -> str | None:
        """The workflow whose instance ``session_id`` is, from its stream's first entry; ``None`` for a chat session.

        Raises:
            InvalidIdError: If the id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        first = await self.buffer.read_available(session_id, None, count=1)
        if not first or first[0].kind != "event" or first[0].event != WORKFLOW_STARTED:
            return None
        name = event_data(first[0]).get("workflow")
        return name if isinstance(name, str) and name in self.workflow_names else None

    def read(
        self, client: SupportsStatusClient, workflow_name: str, instance_id: str, cursor: str | None
    ) -> AsyncIterator[StreamChunk]:
        """The instance's entries after ``cursor``, each once, live, until the workflow's end entry.

        Raises:
            InvalidIdError: If the id is invalid.
            InvalidCursorError: If the cursor is not an entry id.
        """

        async def status_recorded() -> bool:
            status = workflow_status_of(await client.get_status(instance_id), workflow_name)
            if status is None:
                return False
            await record_status(self.buffer, status)
            return status.end_event is None

        return self.buffer.read_session(
            instance_id,
            cursor,
            ends=is_workflow_end,
            on_quiet=status_recorded,
            quiet_seconds=STATUS_CHECK_SECONDS,
        )
