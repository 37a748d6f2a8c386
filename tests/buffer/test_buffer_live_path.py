"""The live path's timing and exactly-once promises, against a real valkey-server.

These tests measure when entries arrive and compare every reader's entries with the stream's, not
only the final text: a stall, a gap or a duplicate fails them.
"""

from __future__ import annotations

import asyncio
import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.buffer.helpers import context, new_id, update
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import StreamChunk, ValkeySettings, ValkeyStreamBuffer


def _settings(base: ValkeySettings, **changes: object) -> ValkeySettings:
    return ValkeySettings(**{**base.__dict__, **changes})


async def _first_chunk_latency(buffer: ValkeyStreamBuffer, pause: float, same_session: bool) -> float:
    """Run one turn to its end, pause, then time a new turn's first chunk from write to reader."""
    first = new_id()
    reader = asyncio.create_task(_collect(buffer, first, "t1"))
    await asyncio.sleep(0.05)
    await buffer.write_chunk(first, "warm-up", correlation_id="t1")
    await buffer.write_completion(first, correlation_id="t1")
    await asyncio.wait_for(reader, 10)

    await asyncio.sleep(pause)
    session = first if same_session else new_id()
    cursor = await buffer.latest_entry_id(session)
    received = asyncio.get_running_loop().create_future()

    async def follow() -> None:
        async for chunk in buffer.read_stream(session, cursor, correlation_id="t2"):
            if not received.done():
                received.set_result(time.monotonic())
            if chunk.is_terminal:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.02)  # the reader has joined; the agent's first token comes a moment later
    written = time.monotonic()
    await buffer.write_chunk(session, "first token", correlation_id="t2")
    try:
        arrived = await asyncio.wait_for(asyncio.shield(received), 10)
    finally:
        await buffer.write_completion(session, correlation_id="t2")
        await asyncio.wait_for(follower, 10)
    return arrived - written


async def _collect(buffer: ValkeyStreamBuffer, session: str, correlation_id: str) -> list[StreamChunk]:
    return [chunk async for chunk in buffer.read_stream(session, correlation_id=correlation_id)]


async def test_a_new_turn_is_live_after_any_pause_of_the_feed(valkey_settings: ValkeySettings) -> None:
    # The pauses sweep the feed's whole blocking-read window (3 s here) and its idle-sweep restart:
    # whatever the feed is doing when a reader joins, the first chunk arrives at the feed's pace.
    block_ms = 3000
    pauses = [i * 0.3 for i in range(12)]
    buffers = [ValkeyStreamBuffer(_settings(valkey_settings, read_block_ms=block_ms)) for _ in range(2 * len(pauses))]
    try:
        latencies = await asyncio.gather(
            *(
                _first_chunk_latency(buffers[2 * i + same], pause, same_session=bool(same))
                for i, pause in enumerate(pauses)
                for same in (0, 1)
            )
        )
    finally:
        for buffer in buffers:
            await buffer.aclose()
    slow = [
        (pause, same, round(latency, 3))
        for (pause, same), latency in zip([(p, s) for p in pauses for s in (0, 1)], latencies, strict=True)
        if latency > 0.5
    ]
    assert not slow, f"first chunk later than 0.5 s after (pause, same session, latency): {slow}"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), resumers=st.integers(3, 12), live_readers=st.integers(1, 4))
async def test_resumers_joining_a_busy_session_get_exactly_the_entries_after_their_cursor(
    valkey_server: ValkeyProcess, valkey_settings: ValkeySettings, seed: int, resumers: int, live_readers: int
) -> None:
    rng = random.Random(seed)
    buffer = ValkeyStreamBuffer(valkey_settings)
    session = new_id()
    key = f"agent-stream:{session}"
    pieces = [f"c{i} " for i in range(160)]
    try:
        live = [asyncio.create_task(_collect(buffer, session, "t")) for _ in range(live_readers)]

        async def produce() -> None:
            ctx = context(session, "t")
            for piece in pieces:
                await buffer.on_streaming_response_update(update(piece), ctx)
                await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003]))
            await buffer.write_completion(session, correlation_id="t")

        async def resume() -> tuple[str, list[str]]:
            await asyncio.sleep(rng.uniform(0, 0.6))
            ids = [entry[0] for entry in valkey_server.command("XRANGE", key, "-", "+")]  # type: ignore[union-attr]
            cursor = rng.choice(ids) if ids else "0"
            chunks = [c async for c in buffer.read_stream(session, cursor, correlation_id="t")]
            return cursor, [c.entry_id for c in chunks]

        producer = asyncio.create_task(produce())
        resumed = await asyncio.wait_for(asyncio.gather(*(resume() for _ in range(resumers))), 30)
        await asyncio.wait_for(producer, 30)
        live_results = await asyncio.wait_for(asyncio.gather(*live), 30)
    finally:
        await buffer.aclose()

    stream_ids = [entry[0] for entry in valkey_server.command("XRANGE", key, "-", "+")]  # type: ignore[union-attr]
    for chunks in live_results:
        assert [c.entry_id for c in chunks] == stream_ids
    for cursor, got in resumed:
        expected = stream_ids if cursor == "0" else stream_ids[stream_ids.index(cursor) + 1 :]
        if cursor == stream_ids[-1]:
            expected = [cursor]  # a cursor at the turn's end gets that end again, at once
        missing = sorted(set(expected) - set(got))
        assert got == expected, f"resumed after {cursor}: missing {missing}, {len(got)} of {len(expected)}"
