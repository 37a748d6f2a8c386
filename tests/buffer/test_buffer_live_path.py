"""The live path's timing and exactly-once promises, against a real valkey-server.

These tests measure when entries arrive and compare every reader's entries with the stream's, not
only the final text: a stall, a gap or a duplicate fails them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.buffer.helpers import MakeBuffer, new_id
from tests.busy_session import busy_session
from tests.eventually import eventually
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import StreamChunk, ValkeySettings, ValkeyStreamBuffer


async def _first_chunk_latency(buffer: ValkeyStreamBuffer, pause: float, same_session: bool) -> float:
    """Run one turn to its end, pause, then time a new turn's first chunk from write to reader."""
    first = new_id()
    reader = asyncio.create_task(_collect(buffer, first, "t1"))
    await eventually(lambda: buffer.reader_stats().active == 1, message="the warm-up reader never joined the live feed")
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
    await eventually(lambda: buffer.reader_stats().active == 1, message="the reader never joined the live feed")
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


async def test_a_new_turn_is_live_after_any_pause_of_the_feed(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    # The pauses sweep the feed's whole blocking-read window (3 s here) and its idle-sweep restart:
    # whatever the feed is doing when a reader joins, the first chunk arrives at the feed's pace.
    three_second_blocks = dataclasses.replace(valkey_settings, read_block_ms=3000)
    pauses = [i * 0.3 for i in range(12)]
    buffers = [make_buffer(three_second_blocks) for _ in range(2 * len(pauses))]
    latencies = await asyncio.gather(
        *(
            _first_chunk_latency(buffers[2 * i + same], pause, same_session=bool(same))
            for i, pause in enumerate(pauses)
            for same in (0, 1)
        )
    )
    slow = [
        (pause, same, round(latency, 3))
        for (pause, same), latency in zip([(p, s) for p in pauses for s in (0, 1)], latencies, strict=True)
        if latency > 0.5
    ]
    assert not slow, f"first chunk later than 0.5 s after (pause, same session, latency): {slow}"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), resumers=st.integers(3, 12), live_readers=st.integers(1, 4))
async def test_resumers_joining_a_busy_session_get_exactly_the_entries_after_their_cursor(
    valkey_server: ValkeyProcess, buffer: ValkeyStreamBuffer, seed: int, resumers: int, live_readers: int
) -> None:
    session = await busy_session(
        buffer, valkey_server, random.Random(seed), resumers=resumers, live_readers=live_readers
    )
    session.assert_exactly_once()
