"""The translation of stream chunks into AG-UI events, on its own: order, ids, outcomes, the snapshot."""

from __future__ import annotations

import json

from ag_ui.core import Event, EventType, UserMessage
from pydantic import TypeAdapter

from http_api._agui_events import AguiTranslator, encode_event
from valkey_buffer import StreamChunk

EVENT = TypeAdapter(Event)


def _turn() -> list[StreamChunk]:
    return [
        StreamChunk("1-0", kind="tool_call", tool_call_id="c1", tool_name="weather", tool_arguments='{"city": "Oslo"}'),
        StreamChunk("1-1", kind="tool_result", tool_call_id="c1", tool_result="snowy"),
        StreamChunk("1-2", "It is "),
        StreamChunk("1-3", "snowy."),
    ]


def _frames(text: str) -> list[tuple[str | None, dict]]:
    frames = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        frames.append((lines.get("id"), json.loads(lines["data"])))
    return frames


def _run(chunks: list[StreamChunk], translator: AguiTranslator | None = None) -> list[tuple[str | None, dict]]:
    translator = translator or AguiTranslator("s1", "r1")
    previous = "0"
    text = encode_event(translator.run_started(), previous)
    for chunk in chunks:
        framed, previous = translator.sse(chunk, previous)
        text += framed
    return _frames(text)


def test_a_turn_with_a_tool_call_becomes_one_well_formed_run() -> None:
    frames = _run([*_turn(), StreamChunk("1-4", kind="done")])

    types = [data["type"] for _, data in frames]
    assert types == [
        "RUN_STARTED",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    for _, data in frames:
        EVENT.validate_python(data)  # every event is a model of the protocol library
    assert frames[0][1]["protocolVersion"] == "1.0"
    assert frames[2][1]["delta"] == '{"city": "Oslo"}' and frames[1][1]["toolCallName"] == "weather"
    assert frames[4][1]["content"] == "snowy"
    assert "".join(d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT") == "It is snowy."
    assert frames[-1][1]["outcome"] == {"type": "success"}


def test_the_last_event_of_an_entry_carries_its_id_and_the_ones_before_it_the_previous_id() -> None:
    frames = _run([*_turn(), StreamChunk("1-4", kind="done")])

    ids = [event_id for event_id, _ in frames]
    # A client cut inside an entry's events re-reads all of them: no text is missed or repeated.
    assert ids == ["0", "0", "0", "1-0", "1-1", "1-1", "1-2", "1-3", "1-3", "1-4"]


def test_a_cancelled_turn_finishes_with_the_cancelled_outcome_and_a_failed_one_with_run_error() -> None:
    cancelled = _run([StreamChunk("1-0", "Half"), StreamChunk("1-1", kind="cancelled")])
    failed = _run([StreamChunk("1-0", "Half"), StreamChunk("1-1", kind="error", error="boom")])

    assert [d["type"] for _, d in cancelled][-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert cancelled[-1][1]["outcome"] == {"type": "cancelled"}
    assert [d["type"] for _, d in failed][-2:] == ["TEXT_MESSAGE_END", "RUN_ERROR"]
    assert failed[-1][1]["message"] == "boom"


def test_a_replace_becomes_a_messages_snapshot_with_the_committed_answer() -> None:
    question = UserMessage(id="u1", content="Oslo in January?")
    translator = AguiTranslator("s1", "r1", (question,))
    frames = _run(
        [*_turn(), StreamChunk("1-4", kind="replace", text="Committed."), StreamChunk("1-5", kind="done")], translator
    )

    snapshot = next(d for _, d in frames if d["type"] == EventType.MESSAGES_SNAPSHOT.value)
    messages = snapshot["messages"]
    assert messages[0] == {"id": "u1", "role": "user", "content": "Oslo in January?"}
    assert messages[1]["toolCalls"][0]["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert messages[2] == {"id": "r1-c1-result", "role": "tool", "content": "snowy", "toolCallId": "c1"}
    assert messages[-1] == {"id": "r1-answer", "role": "assistant", "content": "Committed."}
    assert frames[-1][1]["type"] == "RUN_FINISHED"


def test_nothing_follows_the_runs_end() -> None:
    translator = AguiTranslator("s1", "r1")
    translator.translate(StreamChunk("1-0", kind="done"))

    assert translator.finished
    assert translator.translate(StreamChunk("1-1", "late")) == []
