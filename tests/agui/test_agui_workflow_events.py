"""The translation of a workflow instance's stream into AG-UI runs, on its own: lanes, interrupts, ends, ids."""

from __future__ import annotations

import json

from ag_ui.core import Event, UserMessage
from pydantic import TypeAdapter

from http_api._agui_events import encode_event
from http_api._agui_workflow_events import WorkflowAguiTranslator, ends_run, response_schema
from valkey_buffer import StreamChunk

EVENT = TypeAdapter(Event)
REVIEW = "travel_agents._trip_planner:PlanReview"


def _event(entry_id: str, name: str, data: dict | None = None, **lane: str) -> StreamChunk:
    return StreamChunk(entry_id, kind="event", event=name, data=json.dumps(data or {}), **lane)  # type: ignore[arg-type]


def _text(entry_id: str, lane: str, text: str) -> StreamChunk:
    return StreamChunk(entry_id, text, correlation_id=lane, agent=lane.upper())


def _end(entry_id: str, lane: str, kind: str, error: str | None = None) -> StreamChunk:
    return StreamChunk(entry_id, kind=kind, correlation_id=lane, agent=lane.upper(), error=error)  # type: ignore[arg-type]


def _requested(entry_id: str, request_id: str = "req-1") -> StreamChunk:
    data = {"request_id": request_id, "source_executor": "approval", "request_data": {"draft": "D", "round": 1}}
    return _event(entry_id, "input_requested", {**data, "response_type": REVIEW})


def _run(chunks: list[StreamChunk], translator: WorkflowAguiTranslator | None = None) -> list[tuple[str | None, dict]]:
    translator = translator or WorkflowAguiTranslator("instance", "run-1")
    previous = "0-1"
    text = encode_event(translator.run_started(), previous)
    for chunk in chunks:
        framed, previous = translator.sse(chunk, previous)
        text += framed
    frames = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        EVENT.validate_python(data)  # every event is a model of the protocol library
        frames.append((lines.get("id"), data))
    return frames


def _types(frames: list[tuple[str | None, dict]]) -> list[str]:
    return [data["type"] for _, data in frames]


def _two_lanes() -> list[StreamChunk]:
    return [
        _event("1-1", "workflow_started", {"workflow": "trip_planner"}),
        _event("1-2", "step_started", correlation_id="a", agent="A"),
        _event("1-3", "step_started", correlation_id="b", agent="B"),
        _text("1-4", "a", "Sun "),
        _text("1-5", "b", "Cheap "),
        _text("1-6", "a", "and sea."),
        _end("1-7", "a", "done"),
        _text("1-8", "b", "trains."),
        _end("1-9", "b", "done"),
    ]


def test_agent_calls_become_interleaved_subagent_lanes_and_a_request_ends_the_run_with_an_interrupt() -> None:
    frames = _run([*_two_lanes(), _event("1-10", "input_received"), _requested("1-11")])

    assert _types(frames) == [
        "RUN_STARTED",
        "SUBAGENT_STARTED",
        "SUBAGENT_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "SUBAGENT_FINISHED",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "SUBAGENT_FINISHED",
        "RUN_FINISHED",
    ]
    started = [data for _, data in frames if data["type"] == "SUBAGENT_STARTED"]
    assert [(s["subagentRunId"], s["name"]) for s in started] == [("a", "A"), ("b", "B")]
    contents = [data for _, data in frames if data["type"] == "TEXT_MESSAGE_CONTENT"]
    lane_text = {lane: "".join(d["delta"] for d in contents if d["subagentRunId"] == lane) for lane in "ab"}
    assert lane_text == {"a": "Sun and sea.", "b": "Cheap trains."}
    finished = [data for _, data in frames if data["type"] == "SUBAGENT_FINISHED"]
    assert finished[0]["result"] == {"status": "completed", "text": "Sun and sea."}
    end = frames[-1][1]
    assert (end["threadId"], end["runId"]) == ("instance", "run-1")
    (interrupt,) = end["outcome"]["interrupts"]
    assert interrupt["id"] == "req-1" and interrupt["reason"] == "human_input"
    assert interrupt["metadata"]["requestData"] == {"draft": "D", "round": 1}
    assert interrupt["responseSchema"]["required"] == ["approved"]


def test_each_entry_s_events_end_with_its_id_and_the_ones_before_carry_the_previous_id() -> None:
    frames = _run(_two_lanes()[:5])

    ids = [event_id for event_id, _ in frames]
    # RUN_STARTED at the cursor; SUBAGENT_STARTED a and b at their step entries; then 1-4's group: the
    # message start with the previous id, its content with 1-4's.
    assert ids == ["0-1", "1-2", "1-3", "1-3", "1-4", "1-4", "1-5"]


def test_a_lane_met_in_its_middle_is_opened_at_its_next_entry_and_late_entries_are_dropped() -> None:
    frames = _run([_text("2-1", "a", "more"), _end("2-2", "a", "done"), _text("2-3", "a", "late"), _requested("2-4")])

    assert _types(frames) == [
        "RUN_STARTED",
        "SUBAGENT_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "SUBAGENT_FINISHED",
        "RUN_FINISHED",
    ]
    assert frames[1][1]["name"] == "A"


def test_the_workflow_s_end_closes_open_lanes_and_finishes_with_the_output() -> None:
    output = [{"plan": "P", "approved": True, "rounds": 1}]
    chunks = [*_two_lanes()[:5], _event("1-6", "workflow_completed", {"output": output})]
    frames = _run(chunks)

    assert _types(frames)[-5:] == [
        "TEXT_MESSAGE_END",
        "SUBAGENT_FINISHED",
        "TEXT_MESSAGE_END",
        "SUBAGENT_FINISHED",
        "RUN_FINISHED",
    ]
    assert frames[-1][1]["result"] == output and frames[-1][1]["outcome"] == {"type": "success"}


def test_a_request_while_a_lane_is_open_suspends_that_lane() -> None:
    frames = _run([_text("3-1", "a", "Sun"), _requested("3-2")])

    suspended = [d for _, d in frames if d["type"] == "SUBAGENT_FINISHED"]
    assert suspended == [{"type": "SUBAGENT_FINISHED", "subagentRunId": "a", "outcome": {"type": "suspended"}}]


def test_a_failed_step_is_a_subagent_error_and_the_failed_workflow_a_run_error_with_nothing_after() -> None:
    translator = WorkflowAguiTranslator("instance", "run-1")
    chunks = [
        _text("4-1", "a", "Sun"),
        _end("4-2", "a", "error", "ScriptedModelError: boom"),
        _event("4-3", "workflow_failed", {"error": "A failed: boom"}),
        _text("4-4", "b", "after the end"),
    ]
    frames = _run(chunks, translator)

    assert _types(frames)[-3:] == ["TEXT_MESSAGE_END", "SUBAGENT_ERROR", "RUN_ERROR"]
    assert frames[-2][1]["message"] == "ScriptedModelError: boom"
    assert frames[-1][1]["message"] == "A failed: boom" and frames[-1][1]["code"] == "workflow_failed"
    assert translator.finished


def test_a_cancelled_workflow_finishes_with_the_cancelled_outcome_after_its_cancelled_step() -> None:
    frames = _run([_text("5-1", "a", "Sun"), _end("5-2", "a", "cancelled"), _event("5-3", "workflow_cancelled")])

    assert _types(frames)[-3:] == ["TEXT_MESSAGE_END", "SUBAGENT_FINISHED", "RUN_FINISHED"]
    assert frames[-2][1]["result"] == {"status": "cancelled", "text": "Sun"}
    assert frames[-1][1]["outcome"] == {"type": "cancelled"}


def test_a_reader_that_gives_up_ends_the_run_in_run_error() -> None:
    frames = _run([_text("6-1", "a", "Sun"), StreamChunk("", kind="error", error="no new entries for 30 s")])

    assert _types(frames)[-1] == "RUN_ERROR" and frames[-1][1]["code"] == "stream_error"


def test_a_replace_is_a_snapshot_of_every_lane_with_the_committed_answer_in_its_lane() -> None:
    question = UserMessage(id="u1", content="Plan Oslo")
    translator = WorkflowAguiTranslator("instance", "run-1", [question])
    chunks = [
        _text("7-1", "a", "Sun"),
        _text("7-2", "b", "Cheap"),
        StreamChunk("7-3", "Snow and ice.", kind="replace", correlation_id="a", agent="A"),
    ]
    snapshot = _run(chunks, translator)[-1][1]

    assert snapshot["type"] == "MESSAGES_SNAPSHOT"
    shown = [(m["role"], m.get("subagentRunId"), m["content"]) for m in snapshot["messages"]]
    assert shown == [("user", None, "Plan Oslo"), ("assistant", "a", "Snow and ice."), ("assistant", "b", "Cheap")]


def test_what_ends_a_run_and_the_response_schema() -> None:
    assert ends_run(_requested("8-1")) and ends_run(_event("8-2", "workflow_completed"))
    assert ends_run(StreamChunk("", kind="error", error="gave up"))
    assert not ends_run(_event("8-3", "input_received")) and not ends_run(_end("8-4", "a", "done"))
    assert response_schema(REVIEW) == {
        "title": "PlanReview",
        "type": "object",
        "properties": {"approved": {"type": "boolean"}, "feedback": {"type": "string"}},
        "required": ["approved"],
        "additionalProperties": False,
    }
    assert response_schema(None) is None and response_schema("builtins:str") is None
