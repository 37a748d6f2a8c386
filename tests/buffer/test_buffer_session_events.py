"""Session events are appended once whoever races to append them; a whole-session reader shows every turn once.

A workflow instance's stream holds several turns at once plus events about the instance; its
readers follow it whole, resume from any entry, and end at the entry the caller says ends it.
"""

from __future__ import annotations

import asyncio
import json
import random

from tests.buffer.helpers import new_id, stream_turn
from valkey_buffer import StreamChunk, ValkeyStreamBuffer


def _is_end(chunk: StreamChunk) -> bool:
    return chunk.kind == "event" and chunk.event == "finished"


async def test_an_event_raced_by_many_appenders_is_in_the_stream_once(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    results = await asyncio.gather(
        *(buffer.append_event_once(session, "end", "finished", {"by": n}) for n in range(20))
    )

    assert sum(1 for entry_id in results if entry_id) == 1
    entries = await buffer.session_entries(session)
    assert [(e.kind, e.event, e.text) for e in entries] == [("event", "finished", "")]
    assert json.loads(entries[0].data or "") in [{"by": n} for n in range(20)]
    assert entries[0].entry_id == next(r for r in results if r)


async def test_a_session_reader_shows_interleaved_turns_once_and_resumes_anywhere(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    await buffer.append_event_once(session, "start", "started")
    await asyncio.gather(
        stream_turn(buffer, session, "turn-a", [f"a{i} " for i in range(30)]),
        stream_turn(buffer, session, "turn-b", [f"b{i} " for i in range(30)]),
    )
    await buffer.append_event_once(session, "end", "finished", {"ok": True})
    whole = [c async for c in buffer.read_session(session, ends=_is_end, idle_timeout=5)]
    assert whole[0].event == "started" and _is_end(whole[-1])
    assert {c.correlation_id for c in whole if c.kind == "done"} == {"turn-a", "turn-b"}

    rng = random.Random(7)
    resumed: list[StreamChunk] = []
    cursor: str | None = None
    while not resumed or not _is_end(resumed[-1]):
        reader = buffer.read_session(session, cursor, ends=_is_end, idle_timeout=5)
        for _ in range(rng.randint(1, 9)):
            chunk = await anext(reader)
            resumed.append(chunk)
            cursor = chunk.entry_id
            if _is_end(chunk):
                break
        await reader.aclose()  # type: ignore[attr-defined]
    assert [c.entry_id for c in resumed] == [c.entry_id for c in whole]


async def test_a_quiet_session_asks_its_producer_which_may_append_the_end(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    await buffer.append_event_once(session, "start", "started")
    asked = 0

    async def producer_alive() -> bool:
        nonlocal asked
        asked += 1
        if asked == 3:  # the third look finds the producer done: it records the end
            await buffer.append_event_once(session, "end", "finished")
        return True

    chunks = [c async for c in buffer.read_session(session, ends=_is_end, on_quiet=producer_alive, quiet_seconds=0.1)]
    assert [c.event for c in chunks] == ["started", "finished"]
    assert asked == 3


async def test_a_session_reader_gives_up_when_its_producer_is_gone(buffer: ValkeyStreamBuffer) -> None:
    session = new_id()
    await buffer.append_event_once(session, "start", "started")

    async def gone() -> bool:
        return False

    chunks = [
        c async for c in buffer.read_session(session, ends=_is_end, on_quiet=gone, quiet_seconds=0.1, idle_timeout=0.5)
    ]
    assert chunks[-1].kind == "error" and not chunks[-1].entry_id
