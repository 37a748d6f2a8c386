"""Outages, many readers and connection counts, against real valkey-server processes."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.buffer.helpers import collect, context, new_id, response, stream_turn, update
from tests.shown_text import chunks_text
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer, ValkeyUnavailableError


def _client_names(server: ValkeyProcess) -> list[str]:
    listing = str(server.command("CLIENT", "LIST"))
    return [part.split("=", 1)[1] for line in listing.splitlines() for part in line.split() if part.startswith("name=")]


async def test_200_live_readers_share_a_handful_of_connections(valkey_server: ValkeyProcess, valkey_settings) -> None:
    buffer = ValkeyStreamBuffer(valkey_settings)
    try:
        sessions = [new_id() for _ in range(20)]
        readers = [asyncio.create_task(collect(buffer, sessions[i % 20], correlation_id="t")) for i in range(200)]
        await asyncio.sleep(0.3)
        names = _client_names(valkey_server)
        ours = [n for n in names if n.startswith("valkey-buffer")]
        assert 1 <= len(ours) <= 4, ours

        for session in sessions:
            await stream_turn(buffer, session, "t", ["alpha ", "beta ", "gamma"])
        results = await asyncio.wait_for(asyncio.gather(*readers), 15)
        assert all(chunks_text(chunks) == "alpha beta gamma" for chunks in results)
        assert len([n for n in _client_names(valkey_server) if n.startswith("valkey-buffer")]) <= 4
    finally:
        await buffer.aclose()


async def test_callback_never_raises_and_the_turn_completes_while_valkey_is_down() -> None:
    port_nobody_listens_on = ValkeyProcess().port
    buffer = ValkeyStreamBuffer(
        ValkeySettings(host="127.0.0.1", port=port_nobody_listens_on, request_timeout_ms=200), write_retry_seconds=0.3
    )
    session = new_id()
    ctx = context(session, "t")
    started = time.monotonic()
    for piece in ["a", "b", "c"]:
        await buffer.on_streaming_response_update(update(piece), ctx)
    await buffer.on_agent_response(response("abc"), ctx)
    assert time.monotonic() - started < 10
    assert buffer.stats.entries_dropped >= 1 and buffer.stats.batch_failures >= 1
    assert await buffer.ping() is False
    with pytest.raises(ValkeyUnavailableError):
        await collect(buffer, session)
    await buffer.aclose()


async def test_valkey_restarted_mid_turn_the_writer_survives_and_readers_end(valkey_settings) -> None:
    server = ValkeyProcess().start()
    settings = ValkeySettings(
        host=server.host, port=server.port, read_block_ms=500, request_timeout_ms=300, read_idle_timeout_seconds=3
    )
    buffer = ValkeyStreamBuffer(settings, write_retry_seconds=0.5)
    try:
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
        for _ in range(100):  # GLIDE reconnects by itself, with backoff
            if await buffer.ping():
                break
            await asyncio.sleep(0.1)
        after = [f"after{i} " for i in range(20)]
        for piece in after:
            await buffer.on_streaming_response_update(update(piece), ctx)
        await buffer.on_agent_response(response("whatever was committed"), ctx)

        # The writer resumed: the entries written after the restart are all there, in order.
        resumed = await asyncio.wait_for(collect(buffer, session, correlation_id="t"), 10)
        texts = [c.text for c in resumed if c.kind == "message"]
        assert texts[-len(after) :] == after
        assert resumed[-1].is_done
    finally:
        await buffer.aclose()
        server.stop()


async def test_reader_started_while_valkey_is_down_gets_a_clear_error() -> None:
    buffer = ValkeyStreamBuffer(ValkeySettings(host="127.0.0.1", port=ValkeyProcess().port, request_timeout_ms=200))
    with pytest.raises(ValkeyUnavailableError, match="unavailable"):
        await buffer.read_available(new_id())
    await buffer.aclose()


async def test_aclose_is_idempotent_and_flushes_queued_entries(valkey_settings: ValkeySettings) -> None:
    buffer = ValkeyStreamBuffer(valkey_settings)
    session = new_id()
    await buffer.write_chunk(session, "queued", correlation_id="t")
    await buffer.aclose()
    await buffer.aclose()
    reader = ValkeyStreamBuffer(valkey_settings)
    try:
        assert [c.text for c in await reader.read_available(session)] == ["queued"]
    finally:
        await reader.aclose()


async def test_two_event_loops_get_their_own_clients(valkey_settings: ValkeySettings) -> None:
    # Agent Framework runs the callback on its own loop in another thread; readers run on the
    # HTTP server's loop. Each loop must get clients of its own.
    buffer = ValkeyStreamBuffer(valkey_settings)
    session = new_id()

    def produce_on_another_loop() -> None:
        asyncio.run(stream_turn(buffer, session, "t", ["from ", "another ", "loop"]))

    reader = asyncio.create_task(collect(buffer, session, correlation_id="t"))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(produce_on_another_loop)
    chunks = await asyncio.wait_for(reader, 10)
    assert chunks_text(chunks) == "from another loop"
    assert buffer.connected_loops == 2
    await buffer.aclose()


async def test_a_reader_joining_a_blocked_live_feed_is_served_at_once(valkey_settings: ValkeySettings) -> None:
    # The feed's blocking read waits up to read_block_ms; a new stream must not wait that long.
    buffer = ValkeyStreamBuffer(ValkeySettings(**{**valkey_settings.__dict__, "read_block_ms": 30_000}))
    try:
        first, second = new_id(), new_id()
        waiting = asyncio.create_task(collect(buffer, first, correlation_id="t"))
        await asyncio.sleep(0.3)  # the feed is now blocked on the first stream only
        joined = asyncio.create_task(collect(buffer, second, correlation_id="t"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await stream_turn(buffer, second, "t", ["quick"])
        assert chunks_text(await asyncio.wait_for(joined, 5)) == "quick"
        assert time.monotonic() - started < 1.0
        await stream_turn(buffer, first, "t", ["also"])
        assert chunks_text(await asyncio.wait_for(waiting, 5)) == "also"
    finally:
        await buffer.aclose()
