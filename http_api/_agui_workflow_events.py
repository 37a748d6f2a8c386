"""A workflow instance's stream as AG-UI 1.0 runs: every agent call a subagent lane, human input an interrupt.

One AG-UI thread is one workflow instance (``threadId`` = instance id); one run of it covers the
stream from where the run began (the workflow's start, or the answer to the interrupt it resumes)
to the next place the workflow stops for a person, or its end:

- each agent call (its correlation id) is a subagent lane: ``SUBAGENT_STARTED`` (``subagentRunId``
  = correlation id, ``name`` = agent) at its ``step_started`` or first entry; its text and tool
  events are an ``AguiTranslator``'s, attributed by ``subagentRunId``; its ``done``/``cancelled``
  end it with ``SUBAGENT_FINISHED`` (``result``: ``{"status", "text"}``), its ``error`` with
  ``SUBAGENT_ERROR``; a ``replace`` becomes a ``MESSAGES_SNAPSHOT`` of the run's messages, lane by
  lane, with the committed answer in place of what was streamed;
- ``input_requested`` ends the run with outcome ``interrupt``: one ``Interrupt`` whose ``id`` is the
  request id, the request's data in its ``metadata`` and the response type as ``responseSchema``;
- ``workflow_completed`` ends it with ``RUN_FINISHED`` whose ``result`` is the workflow's output,
  ``workflow_cancelled`` with outcome ``cancelled``, ``workflow_failed`` with ``RUN_ERROR``.

Lanes, messages and tool calls still open when the run ends are closed first, as the protocol asks.
A response that resumes inside a lane (``Last-Event-ID``) opens that lane again at its next entry,
so every response is a whole AG-UI run on its own. SSE ids follow ``_agui_events``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import (
    BaseEvent,
    Interrupt,
    Message,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    SubagentErrorEvent,
    SubagentFinishedEvent,
    SubagentFinishedSuspendedOutcome,
    SubagentStartedEvent,
)
from agent_framework_durabletask._workflows.serialization import resolve_type

from valkey_buffer import StreamChunk

from ._agui_events import PROTOCOL_VERSION, AguiTranslator, encode_group
from ._workflow_status import (
    INPUT_REQUESTED,
    STEP_STARTED,
    WORKFLOW_CANCELLED,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
)
from ._workflow_stream import event_data

INTERRUPT_REASON = "human_input"

_RUN_ENDS = frozenset({INPUT_REQUESTED, WORKFLOW_COMPLETED, WORKFLOW_FAILED, WORKFLOW_CANCELLED})

_LANE_TEXT_KINDS = ("message", "tool_call", "tool_result")
_JSON_TYPES = {bool: "boolean", str: "string", int: "integer", float: "number"}


def ends_run(chunk: StreamChunk) -> bool:
    """Whether a workflow stream entry ends the AG-UI run that reads it: a request for input, or the end."""
    if chunk.kind == "error" and not chunk.entry_id:
        return True  # the reader gave up
    return chunk.kind == "event" and chunk.event in _RUN_ENDS


@dataclass
class _Lane:
    name: str
    text: AguiTranslator


@dataclass
class WorkflowAguiTranslator:
    """Translates the entries of one run's part of a workflow instance's stream into AG-UI events.

    Args:
        thread_id: The instance id.
        run_id: The AG-UI run's id.
        messages: The thread's messages as the run's input gave them (for a ``MESSAGES_SNAPSHOT``).
    """

    thread_id: str
    run_id: str
    messages: Sequence[Message] = ()
    _open: dict[str, _Lane] = field(default_factory=dict)
    _shown: dict[str, _Lane] = field(default_factory=dict)  # every lane of this response, in order
    _finished: bool = False

    @property
    def finished(self) -> bool:
        """Whether the run's last event (``RUN_FINISHED`` or ``RUN_ERROR``) has been produced."""
        return self._finished

    def run_started(self) -> RunStartedEvent:
        """The run's opening event."""
        return RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id, protocol_version=PROTOCOL_VERSION)

    def sse(self, chunk: StreamChunk, previous_id: str) -> tuple[str, str]:
        """The SSE text of one entry's events and the id to pass as ``previous_id`` next time."""
        entry_id = chunk.entry_id or previous_id
        return encode_group(self.translate(chunk), entry_id, previous_id), entry_id

    def translate(self, chunk: StreamChunk) -> list[BaseEvent]:
        """The events for one entry of the instance's stream (none for an entry that adds nothing)."""
        if self._finished:
            return []
        if chunk.kind == "event":
            return self._workflow_event(chunk)
        if chunk.kind == "error" and not chunk.entry_id and not chunk.correlation_id:
            self._finished = True
            return [RunErrorEvent(message=chunk.error or "the stream ended", code="stream_error")]
        lane_id = chunk.correlation_id
        if lane_id is None or (lane_id in self._shown and lane_id not in self._open):
            return []  # not a step's entry, or a late entry of a lane that has ended
        events = self._open_lane(lane_id, chunk.agent)
        lane = self._open[lane_id]
        if chunk.kind in _LANE_TEXT_KINDS:
            events += [_attributed(event, lane_id) for event in lane.text.translate(chunk)]
        elif chunk.kind == "replace":
            events.append(self._snapshot(lane_id, chunk.text))
        elif chunk.kind in ("done", "cancelled"):
            status = "completed" if chunk.kind == "done" else "cancelled"
            events += self._close_lane(lane_id)
            events.append(
                SubagentFinishedEvent(subagent_run_id=lane_id, result={"status": status, "text": lane.text.answer})
            )
        elif chunk.kind == "error":
            events += self._close_lane(lane_id)
            error = chunk.error or "error"
            events.append(SubagentErrorEvent(subagent_run_id=lane_id, message=error, code="agent_error"))
        return events

    def _workflow_event(self, chunk: StreamChunk) -> list[BaseEvent]:
        data = event_data(chunk)
        if chunk.event == STEP_STARTED and chunk.correlation_id:
            if chunk.correlation_id in self._shown:
                return []
            return self._open_lane(chunk.correlation_id, chunk.agent)
        if chunk.event == INPUT_REQUESTED:
            interrupt = _interrupt(data)
            events = self._close_all(suspended=True)
            self._finished = True
            outcome = RunFinishedInterruptOutcome(interrupts=[interrupt])
            return [*events, RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, outcome=outcome)]
        if chunk.event == WORKFLOW_COMPLETED:
            events = self._close_all(suspended=False)
            self._finished = True
            finished = RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                result=data.get("output"),
                outcome=RunFinishedSuccessOutcome(),
            )
            return [*events, finished]
        if chunk.event == WORKFLOW_CANCELLED:
            events = self._close_all(suspended=False)
            self._finished = True
            cancelled = RunFinishedCancelledOutcome()
            return [*events, RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, outcome=cancelled)]
        if chunk.event == WORKFLOW_FAILED:
            self._finished = True  # nothing may follow RUN_ERROR, and nothing needs closing before it
            return [RunErrorEvent(message=str(data.get("error") or "the workflow failed"), code="workflow_failed")]
        return []  # the start, an answer to a request: the run's own doing, nothing to show

    def _open_lane(self, lane_id: str, agent: str | None) -> list[BaseEvent]:
        if lane_id in self._open:
            return []
        lane = _Lane(agent or "agent", AguiTranslator(self.thread_id, lane_id))
        self._open[lane_id] = self._shown[lane_id] = lane
        return [SubagentStartedEvent(subagent_run_id=lane_id, name=lane.name)]

    def _close_lane(self, lane_id: str) -> list[BaseEvent]:
        lane = self._open.pop(lane_id)
        return [_attributed(event, lane_id) for event in lane.text.close_text()]

    def _close_all(self, *, suspended: bool) -> list[BaseEvent]:
        events: list[BaseEvent] = []
        for lane_id in list(self._open):
            lane = self._open[lane_id]
            events += self._close_lane(lane_id)
            if suspended:
                outcome = SubagentFinishedSuspendedOutcome()
                events.append(SubagentFinishedEvent(subagent_run_id=lane_id, outcome=outcome))
            else:
                result = {"status": "completed", "text": lane.text.answer}
                events.append(SubagentFinishedEvent(subagent_run_id=lane_id, result=result))
        return events

    def _snapshot(self, replaced: str, committed: str) -> MessagesSnapshotEvent:
        messages: list[Message] = list(self.messages)
        for lane_id, lane in self._shown.items():
            own = lane.text.run_messages(committed if lane_id == replaced else None)
            messages += [_attributed(message, lane_id) for message in own]
        return MessagesSnapshotEvent(messages=messages)


_Attributable = typing.TypeVar("_Attributable", BaseEvent, Message)


def _attributed(item: _Attributable, lane_id: str) -> _Attributable:
    if not hasattr(item, "subagent_run_id"):
        return item  # a tool call's events inherit their message's lane
    return item.model_copy(update={"subagent_run_id": lane_id})


def _interrupt(data: dict[str, Any]) -> Interrupt:
    """The ``Interrupt`` for an ``input_requested`` entry's data."""
    request_id = str(data.get("request_id") or "request")
    response_type = data.get("response_type")
    metadata = {
        "requestData": data.get("request_data"),
        "sourceExecutor": data.get("source_executor"),
        "responseType": response_type,
    }
    source = data.get("source_executor") or "the workflow"
    return Interrupt(
        id=request_id,
        reason=INTERRUPT_REASON,
        message=f"{source} asks for input: answer with a resume entry whose payload is the response.",
        response_schema=response_schema(response_type if isinstance(response_type, str) else None),
        metadata=metadata,
    )


def response_schema(response_type: str | None) -> dict[str, Any] | None:
    """A JSON Schema for a response type that is a dataclass of plain fields (``PlanReview``), else ``None``."""
    kind = resolve_type(response_type) if response_type else None
    if kind is None or not dataclasses.is_dataclass(kind):
        return None
    hints = typing.get_type_hints(kind)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for item in dataclasses.fields(kind):
        json_type = _JSON_TYPES.get(hints.get(item.name))  # type: ignore[call-overload]
        properties[item.name] = {"type": json_type} if json_type else {}
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            required.append(item.name)
    return {
        "title": kind.__name__,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
