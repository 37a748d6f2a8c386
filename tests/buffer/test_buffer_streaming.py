"""The buffer against a real standalone valkey-server: writes, reads, resume, turns, TTL, MAXLEN."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.buffer.helpers import MakeBuffer, collect, context, new_id, response, stream_turn, update
from tests.eventually import eventually
from tests.shown_text import chunks_text
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import InvalidIdError, ValkeySettings, ValkeyStreamBuffer


async def test_turn_round_trip_through_the_callback(buffer: ValkeyStreamBuffer, valkey_server: ValkeyProcess) -> None:
    session = new_id()
    pieces = ["Paris ", "is ", "lovely\nin ", "spring."]
    await stream_turn(buffer, session, "turn-1", pieces)

    chunks = await collect(buffer, session)

    assert [c.kind for c in chunks] == ["message"] * 4 + ["done"]
    assert [c.text for c in chunks[:4]] == pieces
    assert [c.sequence for c in chunks] == [0, 1, 2, 3, 4]
    assert {c.correlation_id for c in chunks} == {"turn-1"}
    assert chunks[0].agent == "travel"
    raw = valkey_server.command("XRANGE", f"agent-stream:{session}", "-", "+", "COUNT", "1")
    fields = dict(zip(raw[0][1][::2], raw[0][1][1::2], strict=True))
    assert set(fields) >= {"text", "sequence", "timestamp", "correlation_id", "agent"}
    assert fields["timestamp"].isdigit() and len(fields["timestamp"]) == 13


async def test_empty_updates_are_skipped(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    ctx = context(session, "t")
    for piece in ["a", "", "b"]:
        await buffer.on_streaming_response_update(update(piece), ctx)
    await buffer.on_agent_response(response("ab"), ctx)
    chunks = await collect(buffer, session)
    assert [(c.kind, c.text, c.sequence) for c in chunks] == [("message", "a", 0), ("message", "b", 1), ("done", "", 2)]


async def test_live_reader_sees_chunks_as_they_are_written(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    reader = asyncio.create_task(collect(buffer, session, correlation_id="t1"))
    await eventually(lambda: buffer.reader_stats().active == 1, message="the reader never joined the live feed")
    ctx = context(session, "t1")
    for i in range(50):
        await buffer.on_streaming_response_update(update(f"{i},"), ctx)
        if i % 10 == 0:
            await asyncio.sleep(0.01)
    await buffer.on_agent_response(response("".join(f"{i}," for i in range(50))), ctx)
    chunks = await asyncio.wait_for(reader, 10)
    assert chunks_text(chunks) == "".join(f"{i}," for i in range(50))
    assert chunks[-1].is_done


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_resume_from_every_cursor_reproduces_exactly_the_tail(
    buffer: ValkeyStreamBuffer, data: st.DataObject
) -> None:
    session = new_id()
    pieces = data.draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30))
    await stream_turn(buffer, session, "t", pieces)
    everything = await collect(buffer, session)
    cut = data.draw(st.integers(min_value=0, max_value=len(everything) - 2))

    tail = await collect(buffer, session, everything[cut].entry_id)

    assert tail == everything[cut + 1 :]
    assert chunks_text(everything[: cut + 1]) + chunks_text(tail) == "".join(pieces)


async def test_resume_in_the_middle_of_a_live_turn_has_no_gap_and_no_duplicate(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    ctx = context(session, "t")
    expected = [f"<{i}>" for i in range(400)]

    async def produce() -> None:
        for i, piece in enumerate(expected):
            await buffer.on_streaming_response_update(update(piece), ctx)
            if i % 7 == 0:
                await asyncio.sleep(0.001)
        await buffer.on_agent_response(response("".join(expected)), ctx)

    producer = asyncio.create_task(produce())
    seen: list[str] = []
    cursor = None
    # Disconnect after a few chunks each time, as a flaky client would, and resume from the cursor.
    while True:
        count = 0
        finished = False
        async for chunk in buffer.read_stream(session, cursor, correlation_id="t"):
            cursor = chunk.entry_id
            if chunk.is_done:
                finished = True
                break
            seen.append(chunk.text)
            count += 1
            if count == 13:
                break
        if finished:
            break
    await producer
    assert seen == expected


async def test_a_reader_following_the_second_turn_skips_the_first_turns_done(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    await stream_turn(buffer, session, "turn-1", ["first ", "answer"])
    follower = asyncio.create_task(collect(buffer, session, correlation_id="turn-2"))
    await eventually(lambda: buffer.reader_stats().active == 1, message="the follower never joined the live feed")
    await stream_turn(buffer, session, "turn-2", ["second ", "answer"])

    chunks = await asyncio.wait_for(follower, 10)

    assert chunks_text(chunks) == "second answer"
    assert {c.correlation_id for c in chunks} == {"turn-2"}
    assert chunks[-1].is_done
    # Without a correlation id a reader stops at the first turn's end, as the reference readers do.
    assert chunks_text(await collect(buffer, session)) == "first answer"


async def test_sequence_numbers_restart_per_turn(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    await stream_turn(buffer, session, "a", ["x", "y"])
    await stream_turn(buffer, session, "b", ["z"])
    second = await collect(buffer, session, correlation_id="b")
    assert [c.sequence for c in second] == [0, 1]


async def test_final_text_longer_than_the_stream_appends_the_remainder(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    ctx = context(session, "t")
    await buffer.on_streaming_response_update(update("Hello"), ctx)
    await buffer.on_agent_response(response("Hello, world"), ctx)
    chunks = await collect(buffer, session)
    assert [(c.kind, c.text) for c in chunks] == [("message", "Hello"), ("message", ", world"), ("done", "")]


async def test_final_text_that_disagrees_with_the_stream_is_sent_as_replace(buffer: ValkeyStreamBuffer) -> None:
    # What happens when run(stream=True) fails midway and the framework falls back to run().
    session = new_id()
    ctx = context(session, "t")
    await buffer.on_streaming_response_update(update("Partial ans"), ctx)
    await buffer.on_agent_response(response("The complete, different answer."), ctx)
    chunks = await collect(buffer, session)
    assert [c.kind for c in chunks] == ["message", "replace", "done"]
    assert chunks_text(chunks) == "The complete, different answer."


async def test_any_text_reaches_the_stream_byte_for_byte(buffer: ValkeyStreamBuffer) -> None:
    # The write batch carries entries to the server's script as JSON: every character must survive it.
    session = new_id()
    pieces = [
        "Ça coûte 5 € ",
        "✈️ 𝄞 ",
        '"quoted" \\ back\\slash ',
        "line\nbreak\ttab\r ",
        "nul\x00 ",
        "[]{},:",
        "\u2028\u2029",
    ]
    await stream_turn(buffer, session, "t", pieces)
    chunks = await collect(buffer, session)
    assert [c.text for c in chunks if c.kind == "message"] == pieces


async def test_a_replace_entry_keeps_the_committed_text_out_of_text(
    buffer: ValkeyStreamBuffer, valkey_server: ValkeyProcess
) -> None:
    # A reader of the reference schema appends every entry's text: the correction must not add to it.
    session = new_id()
    ctx = context(session, "t")
    await buffer.on_streaming_response_update(update("Partial ans"), ctx)
    await buffer.on_agent_response(response("The complete, different answer."), ctx)
    raw = valkey_server.command("XRANGE", f"agent-stream:{session}", "-", "+")
    entries = [dict(zip(e[1][::2], e[1][1::2], strict=True)) for e in raw]  # type: ignore[union-attr]
    replace = next(fields for fields in entries if fields.get("replace") == "true")
    assert replace["text"] == "" and replace["replace_text"] == "The complete, different answer."
    assert "".join(fields["text"] for fields in entries) == "Partial ans"


async def test_write_error_ends_the_turn_for_its_readers(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    follower = asyncio.create_task(collect(buffer, session, correlation_id="t"))
    await eventually(lambda: buffer.reader_stats().active == 1, message="the follower never joined the live feed")
    await buffer.write_chunk(session, "Working on", correlation_id="t")
    await buffer.write_error(session, "model exploded", correlation_id="t")
    chunks = await asyncio.wait_for(follower, 5)
    assert [c.kind for c in chunks] == ["message", "error"]
    assert chunks[-1].error == "model exploded" and chunks[-1].is_terminal


async def test_ttl_is_set_and_refreshed_by_each_write(
    valkey_server: ValkeyProcess, valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(dataclasses.replace(valkey_settings, stream_ttl_seconds=100))
    session = new_id()
    key = f"agent-stream:{session}"
    await buffer.write_chunk(session, "a", correlation_id="t")
    await buffer.write_completion(session, correlation_id="t")
    assert 95 <= valkey_server.command("TTL", key) <= 100
    valkey_server.command("EXPIRE", key, "10")
    await buffer.write_chunk(session, "b", correlation_id="u")
    await buffer.write_completion(session, correlation_id="u")
    assert valkey_server.command("TTL", key) > 10


async def test_maxlen_caps_the_stream_approximately(
    valkey_server: ValkeyProcess, valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(dataclasses.replace(valkey_settings, stream_maxlen=100))
    session = new_id()
    for i in range(2000):
        await buffer.write_chunk(session, str(i), correlation_id="t")
    await buffer.write_completion(session, correlation_id="t")
    length = valkey_server.command("XLEN", f"agent-stream:{session}")
    # Approximate trimming removes whole radix-tree nodes (100 entries by default).
    assert 100 <= length < 300


async def test_producer_that_dies_leaves_readers_an_idle_timeout_error(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    await buffer.write_chunk(session, "started but never finished", correlation_id="t")
    await buffer.flush_turn(session, "t")

    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks = await asyncio.wait_for(collect(buffer, session, correlation_id="t", idle_timeout=0.5), 5)
    assert [c.kind for c in chunks] == ["message", "error"]
    assert chunks[-1].entry_id == "" and "no new entries" in (chunks[-1].error or "")
    assert 0.4 < loop.time() - started < 3

    # Nothing at all before the first entry: the same.
    chunks = await asyncio.wait_for(collect(buffer, new_id(), idle_timeout=0.3), 5)
    assert [c.kind for c in chunks] == ["error"]


async def test_reference_style_entries_are_read(buffer: ValkeyStreamBuffer, valkey_server: ValkeyProcess) -> None:
    # The reference Redis samples write only text, sequence, timestamp and done.
    session = new_id()
    key = f"agent-stream:{session}"
    for i, text in enumerate(["Hello ", "from ", "redis-py"]):
        valkey_server.command("XADD", key, "*", "text", text, "sequence", str(i), "timestamp", "1700000000000")
    valkey_server.command("XADD", key, "*", "text", "", "sequence", "3", "timestamp", "1700000000001", "done", "true")
    chunks = await collect(buffer, session)
    assert chunks_text(chunks) == "Hello from redis-py"
    assert chunks[-1].is_done and chunks[0].correlation_id is None and chunks[0].timestamp_ms == 1700000000000


async def test_malformed_entries_are_skipped_with_a_warning(
    buffer: ValkeyStreamBuffer, valkey_server: ValkeyProcess, caplog: pytest.LogCaptureFixture
) -> None:
    session = new_id()
    key = f"agent-stream:{session}"
    valkey_server.command("XADD", key, "*", "text", "good ", "sequence", "0")
    valkey_server.command("XADD", key, "*", "text", "bad", "sequence", "not-a-number")
    valkey_server.command("XADD", key, "*", "text", "still good", "sequence", "2")
    valkey_server.command("XADD", key, "*", "done", "true")
    with caplog.at_level(logging.WARNING, logger="valkey_buffer"):
        chunks = await collect(buffer, session)
    assert chunks_text(chunks) == "good still good"
    assert buffer.malformed_entries == 1
    assert any("malformed" in record.message for record in caplog.records)


async def test_read_available_returns_what_is_there_without_waiting(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    await buffer.write_chunk(session, "one", correlation_id="t")
    await buffer.write_chunk(session, "two", correlation_id="t")
    await buffer.flush_turn(session, "t")
    first = await buffer.read_available(session)
    assert [c.text for c in first] == ["one", "two"]
    assert await buffer.read_available(session, first[-1].entry_id) == []
    assert [c.text for c in await buffer.read_available(session, count=1)] == ["one"]


async def test_backpressure_keeps_order_with_a_tiny_queue(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(valkey_settings, max_pending_chunks=3, max_batch=2)
    session = new_id()
    pieces = [f"{i};" for i in range(300)]
    await stream_turn(buffer, session, "t", pieces)
    chunks = await collect(buffer, session)
    assert [c.text for c in chunks[:-1]] == pieces
    assert [c.sequence for c in chunks] == list(range(301))
    assert buffer.stats.entries_dropped == 0


async def test_latest_entry_id_lets_a_new_turn_be_followed_without_the_history(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    assert await buffer.latest_entry_id(session) == "0-0"
    await stream_turn(buffer, session, "old", ["history"] * 50)
    end = await buffer.latest_entry_id(session)
    assert end == (await collect(buffer, session))[-1].entry_id
    await stream_turn(buffer, session, "new", ["fresh"])
    chunks = await collect(buffer, session, end, correlation_id="new")
    assert [c.text for c in chunks] == ["fresh", ""]


async def test_turns_abandoned_by_their_producer_are_forgotten(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(dataclasses.replace(valkey_settings, stream_ttl_seconds=1))
    abandoned = new_id()
    await buffer.write_chunk(abandoned, "never finished", correlation_id="t")
    await buffer.flush_turn(abandoned, "t")
    await asyncio.sleep(1.1)  # quiet for longer than its stream lives
    another = new_id()
    await buffer.write_chunk(another, "another turn", correlation_id="u")
    assert buffer.open_turns() == {(another, "u")}


async def test_writes_with_bad_ids_are_refused_before_anything_is_queued(buffer: ValkeyStreamBuffer) -> None:
    with pytest.raises(InvalidIdError, match="session_id"):
        await buffer.write_chunk("a b", "x", correlation_id="t")
    with pytest.raises(InvalidIdError, match="correlation_id"):
        await buffer.write_chunk(new_id(), "x", correlation_id="{t}")
    assert buffer.open_turns() == set()
