"""Hundreds of turns written at once, each followed live: every reader gets exactly its turn's entries.

The writers of a process share round trips to Valkey (their batches go together in one script call,
see ``valkey_buffer._coalesced_appends``) and one live feed fans every followed stream out to its
readers. With hundreds of turns in flight, several in one session, a reader must still be shown
each entry of its turn after its cursor once, in order, and nothing else. No timing is asserted:
the figures belong to ``bench/bench_scale.py``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tests.buffer.helpers import MakeBuffer, new_id
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import StreamChunk, ValkeySettings

SESSIONS = 100
TURNS_PER_SESSION = 3  # turns of one session share its stream: their batches may share a call
CHUNKS = 30


def _stream(server: ValkeyProcess, session: str) -> list[tuple[str, dict[str, str]]]:
    raw: Any = server.command("XRANGE", f"agent-stream:{session}", "-", "+") or []
    return [(entry_id, dict(zip(fields[::2], fields[1::2], strict=True))) for entry_id, fields in raw]


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def test_every_reader_of_hundreds_of_concurrent_turns_gets_its_entries_exactly_once(
    make_buffer: MakeBuffer, valkey_settings: ValkeySettings, valkey_server: ValkeyProcess
) -> None:
    writer = make_buffer(valkey_settings)
    readers = make_buffer(valkey_settings)
    rng = random.Random(22)
    turns = [(new_id("many"), new_id("c")) for _ in range(SESSIONS)]
    turns = [(session, f"{correlation}-{n}") for session, correlation in turns for n in range(TURNS_PER_SESSION)]
    joined: dict[tuple[str, str], asyncio.Event] = {turn: asyncio.Event() for turn in turns}
    # Every other turn gets a second reader that resumes mid-turn: the turn waits for it halfway.
    halfway: dict[tuple[str, str], asyncio.Event] = {turn: asyncio.Event() for turn in turns[::2]}
    late_joined: dict[tuple[str, str], asyncio.Event] = {turn: asyncio.Event() for turn in turns[::2]}

    async def write(session: str, correlation: str) -> None:
        turn = (session, correlation)
        await joined[turn].wait()
        for i in range(CHUNKS):
            if i == CHUNKS // 2 and turn in halfway:
                await writer.flush_turn(session, correlation)
                halfway[turn].set()
                await late_joined[turn].wait()
            await writer.write_chunk(session, f"{correlation}:{i} ", correlation_id=correlation)
            await asyncio.sleep(rng.random() * 0.02)
        await writer.write_completion(session, correlation_id=correlation)

    async def follow(session: str, correlation: str, cursor: str | None) -> tuple[str | None, list[StreamChunk]]:
        got: list[StreamChunk] = []
        stream = readers.read_stream(session, cursor, correlation_id=correlation)
        (joined if cursor is None else late_joined)[(session, correlation)].set()
        async for chunk in stream:
            got.append(chunk)
        return cursor, got

    async def join_late(session: str, correlation: str) -> tuple[str | None, list[StreamChunk]]:
        # Resumes from the session's newest entry while the turn is halfway: before its end.
        await halfway[(session, correlation)].wait()
        return await follow(session, correlation, await readers.latest_entry_id(session))

    writers = [asyncio.create_task(write(*turn)) for turn in turns]
    followers = [asyncio.create_task(follow(*turn, None)) for turn in turns]
    late = [asyncio.create_task(join_late(*turn)) for turn in turns[::2]]
    await asyncio.wait_for(asyncio.gather(*writers), 300)
    results = await asyncio.wait_for(asyncio.gather(*followers, *late), 300)

    read_turns = [*turns, *turns[::2]]
    wrong: list[str] = []
    for (session, correlation), (cursor, got) in zip(read_turns, results, strict=True):
        after = _order(cursor) if cursor and cursor != "0-0" else (0, 0)
        expected = [
            (entry_id, fields.get("text", ""))
            for entry_id, fields in _stream(valkey_server, session)
            if fields.get("correlation_id") == correlation and _order(entry_id) > after
        ]
        shown = [(chunk.entry_id, chunk.text) for chunk in got]
        if shown != expected or not got or got[-1].kind != "done":
            wrong.append(f"{session}/{correlation} from {cursor}: shown {shown[:3]}... expected {expected[:3]}...")
    assert wrong == [], f"{len(wrong)} of {len(results)} readers: {wrong[:3]}"
    # Every turn's chunks are in its stream once each, in order, then its end.
    for session, correlation in turns:
        entries = _stream(valkey_server, session)
        texts = [fields["text"] for _, fields in entries if fields["correlation_id"] == correlation]
        assert texts == [f"{correlation}:{i} " for i in range(CHUNKS)] + [""]
    assert writer.stats.entries_dropped == 0
