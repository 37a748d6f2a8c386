"""Tool calls and results are entries of their own, in order with the text, once, and out of ``text``.

The callback receives them as Agent Framework function-call and function-result contents (a real
model streams a call's arguments in pieces, later pieces without the call id); each becomes one
``tool_call`` or ``tool_result`` entry with the turn's fields, so readers keep it exactly once, and
with ``text`` empty, so a reader of the reference schema (it appends every entry's ``text``) shows
only the answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from agent_framework import AgentResponseUpdate, Content

from tests.buffer.helpers import MakeBuffer, context, new_id, response, update
from tests.buffer.test_buffer_stream_exactly_once import (
    HOLD_SECONDS,
    _entries,
    _pausing,
    _stored_turn,
    _writer_settings,
    reference_reader_text,
)
from tests.slow_reply_proxy import SlowReplyProxy
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import TOOL_RESULT_MAX_CHARS, ValkeySettings, ValkeyStreamBuffer

BEFORE = [f"a{i} " for i in range(30)]
AFTER = [f"b{i} " for i in range(40)]
ANSWER = "".join(BEFORE + AFTER)
RESULT = "Lisbon in May: sunny, 20 °C."


def _call_pieces() -> list[AgentResponseUpdate]:
    # As a real model streams a call: the first piece names it, the next ones carry argument text only.
    return [
        AgentResponseUpdate(
            contents=[Content.from_function_call(call_id="call_1", name="get_destination_weather", arguments="")],
            role="assistant",
        ),
        AgentResponseUpdate(
            contents=[Content.from_function_call(call_id="", name="", arguments='{"city": "Lis')], role="assistant"
        ),
        AgentResponseUpdate(
            contents=[Content.from_function_call(call_id="", name="", arguments='bon", "month": "May"}')],
            role="assistant",
        ),
    ]


def _result(text: str) -> AgentResponseUpdate:
    return AgentResponseUpdate(contents=[Content.from_function_result(call_id="call_1", result=text)], role="tool")


async def _turn_with_a_tool(
    writer: ValkeyStreamBuffer, session: str, result: str = RESULT, fault: object = None
) -> None:
    ctx = context(session, "t")
    for index, piece in enumerate(BEFORE):
        if fault is not None:
            await fault(index)  # type: ignore[operator]
        await writer.on_streaming_response_update(update(piece), ctx)
        await asyncio.sleep(0.01)
    for call_piece in _call_pieces():
        await writer.on_streaming_response_update(call_piece, ctx)
    await writer.on_streaming_response_update(_result(result), ctx)
    for index, piece in enumerate(AFTER, start=len(BEFORE)):
        if fault is not None:
            await fault(index)  # type: ignore[operator]
        await writer.on_streaming_response_update(update(piece), ctx)
        await asyncio.sleep(0.01)
    await writer.on_agent_response(response(ANSWER), ctx)


async def test_a_tool_call_and_its_result_are_entries_of_their_own_in_order_with_the_text(
    valkey_server: ValkeyProcess, valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(valkey_settings)
    session = new_id()
    await _turn_with_a_tool(buffer, session)

    chunks = await buffer.read_available(session, correlation_id="t")
    kinds = [chunk.kind for chunk in chunks]
    assert kinds == ["message"] * len(BEFORE) + ["tool_call", "tool_result"] + ["message"] * len(AFTER) + ["done"]
    call, result = chunks[len(BEFORE)], chunks[len(BEFORE) + 1]
    assert call.tool_json() == {
        "call_id": "call_1",
        "name": "get_destination_weather",
        "arguments": {"city": "Lisbon", "month": "May"},
    }
    assert result.tool_json() == {"call_id": "call_1", "result": RESULT, "truncated": False}
    assert {(c.correlation_id, c.run) for c in chunks} == {("t", chunks[0].run)}, "the same turn fields"
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    # The reference schema's reader shows the answer alone: tool entries keep ``text`` empty.
    entries = _entries(valkey_server, session)
    assert reference_reader_text(entries) == (ANSWER, True)
    assert [f["text"] for f in entries if "tool" in f] == ["", ""]
    assert buffer.stats.turns_replaced == 0


async def test_a_long_tool_result_is_cut_at_the_documented_size(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(valkey_settings)
    session = new_id()
    await _turn_with_a_tool(buffer, session, result="x" * (TOOL_RESULT_MAX_CHARS + 500))

    chunks = await buffer.read_available(session, correlation_id="t")
    (result,) = [chunk for chunk in chunks if chunk.kind == "tool_result"]
    assert result.tool_result == "x" * TOOL_RESULT_MAX_CHARS and result.tool_result_truncated


async def test_a_call_no_result_followed_is_written_before_the_turns_end(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(valkey_settings)
    session = new_id()
    ctx = context(session, "t")
    for call_piece in _call_pieces():
        await buffer.on_streaming_response_update(call_piece, ctx)
    await buffer.on_agent_response(response(""), ctx)

    chunks = await buffer.read_available(session, correlation_id="t")
    assert [chunk.kind for chunk in chunks] == ["tool_call", "done"]
    assert json.loads(chunks[0].tool_arguments or "") == {"city": "Lisbon", "month": "May"}


async def test_tool_entries_are_written_once_with_replies_held_past_the_timeout(
    valkey_server: ValkeyProcess, valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    proxy = SlowReplyProxy(valkey_server.port)
    try:
        writer = make_buffer(_writer_settings("127.0.0.1", proxy.port))
        session = new_id()

        async def fault(index: int) -> None:
            # Held from just before the tool call until well after it: its writes time out and are retried.
            if index == len(BEFORE) - 2:
                proxy.hold_replies(HOLD_SECONDS)
            elif index == len(BEFORE) + 20:
                proxy.hold_replies(0)

        await _turn_with_a_tool(writer, session, fault=fault)
        entries = await _stored_turn(valkey_server, session, 20)
        assert proxy.replies_held and writer.stats.batch_failures >= 1, "the fault did not bite"
        assert [f.get("tool") for f in entries if "tool" in f] == ["call", "result"]
        keys = [(f["correlation_id"], f["run"], f["sequence"]) for f in entries]
        assert len(keys) == len(set(keys)), "an entry is in the stream twice"
        assert reference_reader_text(entries) == (ANSWER, True)
        ours = await make_buffer(valkey_settings).read_available(session, correlation_id="t")
        assert [c.kind for c in ours].count("tool_call") == 1 and [c.kind for c in ours].count("tool_result") == 1
        proxy.hold_replies(0)
        await writer.aclose()
    finally:
        proxy.close()


@pytest.mark.timeout(120)
async def test_tool_entries_are_written_once_through_an_outage_of_valkey(
    make_valkey_server: Callable[[], ValkeyProcess], make_buffer: MakeBuffer
) -> None:
    server = make_valkey_server()
    writer = make_buffer(_writer_settings(server.host, server.port))
    session = new_id()
    # Frozen (SIGSTOP) a few chunks before the tool call, for longer than the whole turn takes.
    fault, thawing = _pausing([server], 4.0, at=len(BEFORE) - 3)

    await _turn_with_a_tool(writer, session, fault=fault)
    assert thawing and not thawing[0].done(), "the turn outlived the pause: make the pause longer"
    await thawing[0]
    entries = await _stored_turn(server, session, 30)

    assert writer.stats.batch_failures >= 1, "the fault did not bite"
    assert [f.get("tool") for f in entries if "tool" in f] == ["call", "result"]
    keys = [(f["correlation_id"], f["run"], f["sequence"]) for f in entries]
    assert len(keys) == len(set(keys)), "an entry is in the stream twice"
    assert reference_reader_text(entries) == (ANSWER, True)
