"""Faults longer than every retry window and slower than every timeout, against real valkey-server processes.

Each test checks what every reader shows, chunk by chunk: no chunk twice (sequences only go up),
the committed text at the end, and the end in time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.buffer.helpers import MakeBuffer, context, new_id, response, update
from tests.eventually import eventually
from tests.shown_text import chunks_text
from tests.slow_reply_proxy import SlowReplyProxy
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import StreamChunk, TurnOutcome, ValkeySettings, ValkeyStreamBuffer

PIECES = [f"word{i} " for i in range(120)]
FINAL = "".join(PIECES)


@dataclass
class Commit:
    """Stands in for the durable entity's commit: the source of truth readers reconcile with."""

    text: str | None = None
    at: float = 0.0
    asked: list[str] = field(default_factory=list)

    def done(self, text: str) -> None:
        self.text, self.at = text, time.monotonic()

    async def lookup(self, correlation_id: str, agent: str | None) -> TurnOutcome | None:
        self.asked.append(correlation_id)
        return None if self.text is None else TurnOutcome(status="completed", text=self.text)


def _check_reader(name: str, chunks: list[StreamChunk]) -> None:
    messages = [c.sequence for c in chunks if c.kind == "message" and c.sequence is not None]
    assert messages == sorted(set(messages)), f"{name} was shown a chunk twice: {messages}"
    assert chunks and chunks[-1].kind == "done", f"{name} did not end with done: {chunks[-3:]}"
    assert chunks_text(chunks) == FINAL, f"{name} shows {chunks_text(chunks)[:80]!r}..."


async def _read(buffer: ValkeyStreamBuffer, session: str, cursor: str | None, commit: Commit) -> list[StreamChunk]:
    stream = buffer.read_stream(session, cursor, correlation_id="t", committed_turn=commit.lookup)
    return [chunk async for chunk in stream]


async def test_replies_held_past_the_request_timeout_show_no_chunk_twice(
    valkey_server: ValkeyProcess, make_buffer: MakeBuffer
) -> None:
    proxy = SlowReplyProxy(valkey_server.port)
    direct = ValkeySettings(host=valkey_server.host, port=valkey_server.port, read_reconcile_seconds=30)
    slow = ValkeySettings(host="127.0.0.1", port=proxy.port, request_timeout_ms=300)
    writer, readers = make_buffer(slow), make_buffer(direct)
    session, commit = new_id(), Commit()
    try:
        live = asyncio.create_task(_read(readers, session, None, commit))
        await eventually(lambda: readers.reader_stats().active == 1, message="the reader never joined the live feed")
        ctx = context(session, "t")
        for index, piece in enumerate(PIECES):
            if index == 30:
                proxy.hold_replies(0.45)  # longer than the 300 ms request timeout: each write times out
            if index == 70:
                proxy.hold_replies(0)
            await writer.on_streaming_response_update(update(piece), ctx)
            await asyncio.sleep(0.01)
        await writer.on_agent_response(response(FINAL), ctx)
        commit.done(FINAL)
        live_chunks = await asyncio.wait_for(live, 20)
        from_start = await asyncio.wait_for(_read(readers, session, "0", commit), 20)
        available = await readers.read_available(session, correlation_id="t")
        await writer.aclose()  # while the proxy still forwards: closing writes out what is queued
    finally:
        proxy.close()

    # The fault happened: writes timed out and were retried; Valkey ignored what it had applied.
    raw = valkey_server.command("XRANGE", f"agent-stream:{session}", "-", "+")
    sequences = [dict(zip(e[1][::2], e[1][1::2], strict=True))["sequence"] for e in raw]  # type: ignore[union-attr]
    assert proxy.replies_held and writer.stats.batch_failures >= 1
    assert len(sequences) == len(set(sequences)), "an entry was appended twice"
    _check_reader("live reader", live_chunks)
    _check_reader("reader from the start", from_start)
    _check_reader("read_available", available)
    # The stream itself was complete: readers ended with its own done, not with a reconciliation.
    assert live_chunks[-1].entry_id and from_start[-1].entry_id


async def _outage_scenario(outage: float, server: ValkeyProcess, make_buffer: MakeBuffer) -> dict[str, object]:
    """One turn with ``server`` killed for ``outage`` seconds in its middle; returns what to check."""
    settings = ValkeySettings(
        host=server.host,
        port=server.port,
        request_timeout_ms=300,
        read_block_ms=500,
        read_idle_timeout_seconds=120,  # far beyond the test: no reader may end by giving up
        read_reconcile_seconds=1,
    )
    writer, readers = make_buffer(settings, write_retry_seconds=1), make_buffer(settings)
    session, commit = new_id(), Commit()
    ctx = context(session, "t")
    restarted = asyncio.get_running_loop().create_future()
    killed = False
    last_seen_before_outage = ""  # where a reader that lost its connection in the outage resumes
    live_chunks: list[StreamChunk] = []

    async def follow_live() -> None:
        nonlocal last_seen_before_outage
        async for chunk in readers.read_stream(session, correlation_id="t", committed_turn=commit.lookup):
            live_chunks.append(chunk)
            if not killed and chunk.entry_id:
                last_seen_before_outage = chunk.entry_id

    live = asyncio.create_task(follow_live())
    await eventually(lambda: readers.reader_stats().active == 1, message="the reader never joined the live feed")

    async def outage_then_restart() -> None:
        nonlocal killed
        killed = True
        server.stop()
        await asyncio.sleep(outage)
        server.start()
        restarted.set_result(time.monotonic())

    outage_task = None
    for index, piece in enumerate(PIECES):
        if index == 40:
            outage_task = asyncio.create_task(outage_then_restart())
            await asyncio.sleep(0)
        await writer.on_streaming_response_update(update(piece), ctx)
        await asyncio.sleep(0.02)
    await writer.on_agent_response(response(FINAL), ctx)
    commit.done(FINAL)

    await asyncio.wait_for(live, outage + 20)
    live_ended = time.monotonic()
    restart_time = await asyncio.wait_for(restarted, outage + 20)
    assert outage_task is not None
    await outage_task
    # A client that reconnects right after the restart may get "unavailable" (a 503) while the
    # connection is re-established: like a client that retries, start once Valkey answers.
    await eventually(readers.ping, timeout=20, interval=0.1, message="Valkey never answered after its restart")
    resumed_started = time.monotonic()
    resumed = await asyncio.wait_for(_read(readers, session, last_seen_before_outage, commit), 20)
    resumed_ended = time.monotonic()
    from_start = await asyncio.wait_for(_read(readers, session, None, commit), 20)
    from_start_ended = time.monotonic()

    async def stored_up_to_its_end() -> list[StreamChunk] | None:
        stored = await readers.read_available(session, correlation_id="t")
        return stored if any(c.is_done for c in stored) else None

    # The writer's end reaches Valkey once it is back, whatever the outage's length.
    stored = await eventually(
        stored_up_to_its_end, timeout=10, interval=0.1, message="the turn's end never reached the stream"
    )
    return {
        "commit_at": commit.at,
        "restart_at": restart_time,
        "live": live_chunks,
        "live_ended": live_ended,
        "resumed": resumed,
        "resumed_took": resumed_ended - resumed_started,
        "from_start": from_start,
        "from_start_took": from_start_ended - resumed_ended,
        "stored": stored,
        "dropped": writer.stats.entries_dropped,
    }


@pytest.mark.timeout(180)
async def test_valkey_killed_mid_turn_every_reader_ends_with_the_committed_text(
    make_valkey_server: Callable[[], ValkeyProcess], make_buffer: MakeBuffer
) -> None:
    outages = (2.0, 8.0, 30.0)
    results = await asyncio.gather(*(_outage_scenario(outage, make_valkey_server(), make_buffer) for outage in outages))
    for outage, result in zip(outages, results, strict=True):
        for reader in ("live", "resumed", "from_start"):
            _check_reader(f"{reader} reader ({outage:g} s outage)", result[reader])  # type: ignore[arg-type]
        # Nobody waits for the idle timeout: the live reader ends within a reconcile period (1 s)
        # of the commit, or of Valkey's return when the stream's end could only come after it.
        ended_late = result["live_ended"] - result["commit_at"]  # type: ignore[operator]
        assert ended_late < 4, f"live reader ended {ended_late:.1f} s after the commit ({outage:g} s outage)"
        assert result["resumed_took"] < 3 and result["from_start_took"] < 3  # type: ignore[operator]
        # The stream itself is repaired: its stored end carries the committed text.
        _check_reader(f"the stored stream ({outage:g} s outage)", result["stored"])  # type: ignore[arg-type]
