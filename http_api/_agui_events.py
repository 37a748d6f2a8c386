"""Stream entries as AG-UI 1.0 events: the one place that translates a turn's stream into the protocol.

A turn's entries map onto one AG-UI run (``threadId`` = session id, ``runId`` = correlation id):

- ``message`` entries become one ``TEXT_MESSAGE_START``, a ``TEXT_MESSAGE_CONTENT`` per entry and a
  ``TEXT_MESSAGE_END`` once something else follows (a tool call, the end);
- ``tool_call`` becomes ``TOOL_CALL_START``/``ARGS``/``END`` (the arguments in one piece: the entry
  holds the whole call), ``tool_result`` becomes ``TOOL_CALL_RESULT``;
- ``done`` becomes ``RUN_FINISHED`` (outcome ``success``), ``cancelled`` ``RUN_FINISHED`` (outcome
  ``cancelled``), ``error`` ``RUN_ERROR``;
- ``replace`` (the committed answer differs from what was streamed) becomes a ``MESSAGES_SNAPSHOT``:
  the thread's messages as the input gave them, the run's tool calls and results, and the committed
  answer as the run's one assistant message. A snapshot is how AG-UI says "this, not what you
  assembled, is the conversation"; a client that follows the protocol replaces its messages with it.

SSE ids make the stream resumable: the last event of an entry's group carries the entry's id, the
events before it the id of the entry before (a client cut inside a group re-reads the whole group,
so no text is missed and none repeats). ``RUN_STARTED`` carries the cursor the response began at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    FunctionCall,
    Message,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCall,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    ToolMessage,
)

from valkey_buffer import StreamChunk

from ._sse import encode_sse_event

PROTOCOL_VERSION = "1.0"


@dataclass
class AguiTranslator:
    """Translates one turn's stream chunks into AG-UI events, in order.

    Args:
        thread_id: The session id.
        run_id: The turn's correlation id.
        messages: The thread's messages as the run's input gave them (for a ``MESSAGES_SNAPSHOT``).
    """

    thread_id: str
    run_id: str
    messages: Sequence[Message] = ()
    _text_id: str | None = None
    _answer: list[str] = field(default_factory=list)
    _tool_messages: list[Message] = field(default_factory=list)
    _finished: bool = False

    @property
    def finished(self) -> bool:
        """Whether the run's last event (``RUN_FINISHED`` or ``RUN_ERROR``) has been produced."""
        return self._finished

    @property
    def answer(self) -> str:
        """The run's text so far (the committed text after a ``replace``)."""
        return "".join(self._answer)

    def run_started(self) -> RunStartedEvent:
        """The run's opening event."""
        return RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id, protocol_version=PROTOCOL_VERSION)

    def translate(self, chunk: StreamChunk) -> list[BaseEvent]:
        """The events for one chunk of the turn (none for a chunk that adds nothing)."""
        if self._finished:
            return []
        if chunk.kind == "message":
            if not chunk.text:
                return []
            events: list[BaseEvent] = []
            if self._text_id is None:
                # Named after the entry that opened it: stable whichever response shows it.
                self._text_id = f"{self.run_id}-{chunk.entry_id or 'text'}"
                events.append(TextMessageStartEvent(message_id=self._text_id, role="assistant"))
            self._answer.append(chunk.text)
            events.append(TextMessageContentEvent(message_id=self._text_id, delta=chunk.text))
            return events
        events = self.close_text()
        if chunk.kind == "tool_call":
            call_id = chunk.tool_call_id or f"{self.run_id}-call"
            name = chunk.tool_name or "tool"
            arguments = chunk.tool_arguments or "{}"
            self._tool_messages.append(
                AssistantMessage(
                    id=f"{self.run_id}-{call_id}-call",
                    tool_calls=[ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))],
                )
            )
            events += [
                ToolCallStartEvent(tool_call_id=call_id, tool_call_name=name),
                ToolCallArgsEvent(tool_call_id=call_id, delta=arguments),
                ToolCallEndEvent(tool_call_id=call_id),
            ]
        elif chunk.kind == "tool_result":
            call_id = chunk.tool_call_id or f"{self.run_id}-call"
            message_id = f"{self.run_id}-{call_id}-result"
            content = chunk.tool_result or ""
            self._tool_messages.append(ToolMessage(id=message_id, tool_call_id=call_id, content=content))
            events.append(
                ToolCallResultEvent(message_id=message_id, tool_call_id=call_id, content=content, role="tool")
            )
        elif chunk.kind == "replace":
            events.append(self._snapshot(chunk.text))
        elif chunk.kind == "done":
            self._finished = True
            events.append(self._finished_event(RunFinishedSuccessOutcome()))
        elif chunk.kind == "cancelled":
            self._finished = True
            events.append(self._finished_event(RunFinishedCancelledOutcome()))
        elif chunk.kind == "error":
            self._finished = True
            events.append(RunErrorEvent(message=chunk.error or "error", code="agent_error"))
        return events

    def sse(self, chunk: StreamChunk, previous_id: str) -> tuple[str, str]:
        """The SSE text of one chunk's events and the id to pass as ``previous_id`` next time."""
        entry_id = chunk.entry_id or previous_id
        return encode_group(self.translate(chunk), entry_id, previous_id), entry_id

    def close_text(self) -> list[BaseEvent]:
        """``TEXT_MESSAGE_END`` for the text message in progress, if one is."""
        if self._text_id is None:
            return []
        ended = TextMessageEndEvent(message_id=self._text_id)
        self._text_id = None
        return [ended]

    def run_messages(self, committed: str | None = None) -> list[Message]:
        """The run's own messages as a ``MESSAGES_SNAPSHOT`` shows them: its tool calls and results, then
        its answer (``committed`` from now on, when given) as one assistant message."""
        if committed is not None:
            self._answer = [committed]
        answer = AssistantMessage(id=f"{self.run_id}-answer", content=self.answer)
        return [*self._tool_messages, answer]

    def _snapshot(self, committed: str) -> MessagesSnapshotEvent:
        return MessagesSnapshotEvent(messages=[*self.messages, *self.run_messages(committed)])

    def _finished_event(self, outcome: RunFinishedSuccessOutcome | RunFinishedCancelledOutcome) -> RunFinishedEvent:
        return RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, outcome=outcome)


def encode_group(events: Sequence[BaseEvent], entry_id: str, previous_id: str) -> str:
    """The SSE text of the events one entry became: the last carries ``entry_id``, the others
    ``previous_id`` (a client cut inside the group re-reads all of it)."""
    return "".join(
        encode_event(event, entry_id if index == len(events) - 1 else previous_id) for index, event in enumerate(events)
    )


def encode_event(event: BaseEvent, event_id: str | None) -> str:
    """One AG-UI event as SSE, with an ``id`` (the encoder of ``ag_ui.encoder`` writes ``data`` only)."""
    return encode_sse_event(event.model_dump_json(by_alias=True), id=event_id or None)
