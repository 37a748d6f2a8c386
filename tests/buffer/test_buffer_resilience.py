"""Outages, many readers and connection counts, against real valkey-server processes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest

from tests.buffer.helpers import MakeBuffer, collect, context, new_id, response, stream_turn, update
from tests.eventually import eventually
from tests.shown_text import chunks_text
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer, ValkeyUnavailableError


def _client_names(server: ValkeyProcess) -> list[str]:
    listing = str(server.command("CLIENT", "LIST"))
    return [part.split("=", 1)[1] for line in listing.splitlines() for part in line.split() if part.startswith("name=")]


async def test_200_live_readers_share_a_handful_of_connections(
    valkey_server: ValkeyProcess, buffer: ValkeyStreamBuffer
) -> None:
    sessions = [new_id() for _ in range(20)]
    readers = [asyncio.create_task(collect(buffer, sessions[i % 20], correlation_id="t")) for i in range(200)]
    await eventually(lambda: buffer.reader_stats().active == 200, message="200 readers never joined the live feed")
    names = _client_names(valkey_server)
    ours = [n for n in names if n.startswith("valkey-buffer")]
    assert 1 <= len(ours) <= 4, ours

    for session in sessions:
        await stream_turn(buffer, session, "t", ["alpha ", "beta ", "gamma"])
    results = await asyncio.wait_for(asyncio.gather(*readers), 15)
    assert all(chunks_text(chunks) == "alpha beta gamma" for chunks in results)
    assert len([n for n in _client_names(valkey_server) if n.startswith("valkey-buffer")]) <= 4


async def test_callback_never_raises_and_the_turn_completes_while_valkey_is_down(make_buffer: MakeBuffer) -> None:
    port_nobody_listens_on = ValkeyProcess().port
    buffer = make_buffer(
        ValkeySettings(host="127.0.0.1", port=port_nobody_listens_on, request_timeout_ms=200), write_retry_seconds=0.3
    )
    session = new_id()
    ctx = context(session, "t")
    started = time.monotonic()
    for piece in ["a", "b", "c"]:
        await buffer.on_streaming_response_update(update(piece), ctx)
    await buffer.on_agent_response(response("abc"), ctx)
    # The callback does not wait on the outage; the writer keeps the entries and retries them.
    assert time.monotonic() - started < 2
    assert buffer.stats.entries_dropped == 0 and buffer.stats.batch_failures >= 1
    assert await buffer.ping() is False
    with pytest.raises(ValkeyUnavailableError):
        await collect(buffer, session)


async def test_valkey_restarted_mid_turn_the_writer_survives_and_readers_end(
    make_valkey_server: Callable[[], ValkeyProcess], make_buffer: MakeBuffer
) -> None:
    server = make_valkey_server()
    settings = ValkeySettings(
        host=server.host, port=server.port, read_block_ms=500, request_timeout_ms=300, read_idle_timeout_seconds=3
    )
    buffer = make_buffer(settings, write_retry_seconds=0.5)
    session = new_id()
    ctx = context(session, "t")
    reader = asyncio.create_task(collect(buffer, session, correlation_id="t"))
    for i in range(20):
        await buffer.on_streaming_response_update(update(f"before{i} "), ctx)
    await asyncio.sleep(0.2)

    server.stop()
    outage_started = time.monotonic()
    for i in range(20):
        await buffer.on_streaming_response_update(update(f"during{i} "), ctx)
        await asyncio.sleep(0.01)
    # The live reader ends (an error, or its idle timeout) instead of hanging.
    chunks = await asyncio.wait_for(reader, 10)
    assert chunks[-1].kind == "error"
    assert time.monotonic() - outage_started < 10

    server.start()  # same port, empty data set
    # GLIDE reconnects by itself, with backoff.
    await eventually(buffer.ping, timeout=20, interval=0.1, message="Valkey never answered after its restart")
    after = [f"after{i} " for i in range(20)]
    for piece in after:
        await buffer.on_streaming_response_update(update(piece), ctx)
    await buffer.on_agent_response(response("whatever was committed"), ctx)

    # The writer resumed: the entries written after the restart are all there, in order.
    resumed = await asyncio.wait_for(collect(buffer, session, correlation_id="t"), 10)
    texts = [c.text for c in resumed if c.kind == "message"]
    assert texts[-len(after) :] == after
    assert resumed[-1].is_done


async def test_reader_started_while_valkey_is_down_gets_a_clear_error(make_buffer: MakeBuffer) -> None:
    buffer = make_buffer(ValkeySettings(host="127.0.0.1", port=ValkeyProcess().port, request_timeout_ms=200))
    with pytest.raises(ValkeyUnavailableError, match="unavailable"):
        await buffer.read_available(new_id())


async def test_aclose_is_idempotent_and_flushes_queued_entries(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(valkey_settings)
    session = new_id()
    await buffer.write_chunk(session, "queued", correlation_id="t")
    await buffer.aclose()
    await buffer.aclose()
    reader = make_buffer(valkey_settings)
    assert [c.text for c in await reader.read_available(session)] == ["queued"]


async def test_two_event_loops_get_their_own_clients(buffer: ValkeyStreamBuffer) -> None:
    # Agent Framework runs the callback on its own loop in another thread; readers run on the
    # HTTP server's loop. Each loop must get clients of its own.
    session = new_id()

    def produce_on_another_loop() -> None:
        asyncio.run(stream_turn(buffer, session, "t", ["from ", "another ", "loop"]))

    reader = asyncio.create_task(collect(buffer, session, correlation_id="t"))
    await eventually(lambda: buffer.reader_stats().active == 1, message="the reader never joined the live feed")
    await asyncio.to_thread(produce_on_another_loop)
    chunks = await asyncio.wait_for(reader, 10)
    assert chunks_text(chunks) == "from another loop"
    assert buffer.connected_loops == 2


async def test_a_reader_joining_a_blocked_live_feed_is_served_at_once(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    # The feed's blocking read waits up to read_block_ms; a new stream must not wait that long.
    buffer = make_buffer(dataclasses.replace(valkey_settings, read_block_ms=30_000))
    first, second = new_id(), new_id()
    waiting = asyncio.create_task(collect(buffer, first, correlation_id="t"))
    await eventually(lambda: buffer.reader_stats().active == 1, message="the first reader never joined the live feed")
    # Time for the feed to send its blocking read: from then on it is blocked on the first stream only.
    await asyncio.sleep(0.3)
    joined = asyncio.create_task(collect(buffer, second, correlation_id="t"))
    await eventually(lambda: buffer.reader_stats().active == 2, message="the second reader never joined the live feed")
    started = time.monotonic()
    await stream_turn(buffer, second, "t", ["quick"])
    assert chunks_text(await asyncio.wait_for(joined, 5)) == "quick"
    assert time.monotonic() - started < 1.0
    await stream_turn(buffer, first, "t", ["also"])
    assert chunks_text(await asyncio.wait_for(waiting, 5)) == "also"
