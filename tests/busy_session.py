"""One turn streamed into a session that live readers follow while resumers join at random moments.

Shared by the hand-off test (tests/buffer/test_buffer_live_path.py) and its benchmark
(bench/bench_live_path.py), which runs it against an earlier revision of valkey_buffer too: only
the API both revisions have is used.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from typing import Any

from tests.valkey_servers import ValkeyProcess


@dataclass
class BusySession:
    """What every reader got, by entry id, and what the stream holds."""

    stream_ids: list[str]
    live: list[list[str]]
    resumed: list[tuple[str, list[str]]]  # (cursor, ids got after it)
    hung: int  # readers that had not ended ``reader_timeout`` seconds after the turn's end was written

    def expected_after(self, cursor: str) -> list[str]:
        """What a resumer from ``cursor`` must get: every entry after it, or the turn's end again."""
        if cursor == "0":
            return self.stream_ids
        if cursor == self.stream_ids[-1]:
            return [cursor]  # a cursor at the turn's end gets that end again, at once
        return self.stream_ids[self.stream_ids.index(cursor) + 1 :]

    def assert_exactly_once(self) -> None:
        """Every reader ended, live readers got every entry and resumers every entry after their cursor, in order."""
        assert self.hung == 0, f"{self.hung} readers had not ended 30 s after the turn's end"
        for got in self.live:
            assert got == self.stream_ids
        for cursor, got in self.resumed:
            expected = self.expected_after(cursor)
            missing = sorted(set(expected) - set(got))
            assert got == expected, f"resumed after {cursor}: missing {missing}, {len(got)} of {len(expected)}"


async def busy_session(
    buffer: Any,
    server: ValkeyProcess,
    rng: random.Random,
    *,
    resumers: int,
    live_readers: int,
    chunks: int = 160,
    reader_timeout: float = 30,
) -> BusySession:
    """Stream one turn of ``chunks`` chunks while readers follow it and resumers join; see the module."""
    session = uuid.uuid4().hex
    key = f"agent-stream:{session}"
    ended = asyncio.Event()
    hung = 0

    async def follow(cursor: str | None) -> list[str]:
        nonlocal hung
        got: list[str] = []

        async def read() -> None:
            async for chunk in buffer.read_stream(session, cursor, correlation_id="t"):
                got.append(chunk.entry_id)

        reader = asyncio.create_task(read())
        await ended.wait()
        try:
            await asyncio.wait_for(reader, reader_timeout)
        except TimeoutError:
            hung += 1
        return got

    async def produce() -> None:
        for i in range(chunks):
            await buffer.write_chunk(session, f"c{i} ", correlation_id="t")
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003]))
        await buffer.write_completion(session, correlation_id="t")
        ended.set()

    async def resume() -> tuple[str, list[str]]:
        await asyncio.sleep(rng.uniform(0, 0.6))
        ids = [entry[0] for entry in server.command("XRANGE", key, "-", "+")]  # type: ignore[union-attr]
        cursor = rng.choice(ids) if ids else "0"
        return cursor, await follow(cursor)

    live = [asyncio.create_task(follow(None)) for _ in range(live_readers)]
    producer = asyncio.create_task(produce())
    resumed = await asyncio.gather(*(resume() for _ in range(resumers)))
    await producer
    live_ids = await asyncio.gather(*live)
    stream_ids = [entry[0] for entry in server.command("XRANGE", key, "-", "+")]  # type: ignore[union-attr]
    return BusySession(stream_ids=stream_ids, live=list(live_ids), resumed=list(resumed), hung=hung)
