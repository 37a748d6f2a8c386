"""Cancelling turns, measured: how soon a reader sees ``cancelled``, and what the cancel check costs the write path.

Run: .venv/bin/python -m bench.bench_cancel [--cancels 100] [--concurrency 10]

- Cancel latency: a local host (``python -m devhost``, the scripted model at its default pace of 40 ms
  a chunk) streams turns; after the third chunk of each, the client asks to cancel it and times the
  request to the ``cancelled`` event on the same SSE stream. p50/p99 over all cancels.
- Write path: one turn of 20,000 chunks through ``write_chunk``, watched for cancellation (as the agent
  middleware watches every turn: its write batches ask, at most every 0.1 s) and not watched (no
  question asked), in 10 rounds of one each, which goes first alternating (ABBA). The speed drifts
  over a run (each turn is a little slower than the one before), so the ratio is the median of the
  rounds' ratios, each of two neighbouring turns.

Figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from bench._stats import alternating_rounds, pct
from tests.e2e.devhost_process import DevHostProcess
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer


async def cancel_one(client: httpx.AsyncClient, api: str, agent: str) -> float | str:
    """Stream a turn, cancel it after its third chunk; seconds from the request to ``cancelled``, or what went wrong."""
    chunks = 0
    asked = 0.0
    async with aconnect_sse(client, "POST", f"{api}/agents/{agent}/stream", json={"message": "Cancel me"}) as source:
        session_id = source.response.headers["x-session-id"]
        correlation_id = source.response.headers["x-correlation-id"]
        async for event in source.aiter_sse():
            if event.event == "message" and event.data:
                chunks += 1
                if chunks == 3:
                    asked = time.perf_counter()
                    url = f"{api}/agents/{agent}/sessions/{session_id}/turns/{correlation_id}/cancel"
                    response = await client.post(url)
                    if response.status_code != 202:
                        return f"cancel answered {response.status_code}"
            elif event.event == "cancelled":
                return time.perf_counter() - asked
            elif event.event in ("done", "error"):
                return f"the turn ended with {event.event}"
    return "the stream ended without an end event"


async def cancel_latencies(cancels: int, concurrency: int) -> tuple[list[float], list[str]]:
    with tempfile.TemporaryDirectory(prefix="bench-cancel-") as folder:
        host = DevHostProcess.start(Path(folder), env={"SCRIPTED_CHUNK_DELAY_MS": "40"}, name="bench-cancel")
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                agent = (await client.get(f"{host.api}/health")).json()["agents"][0]["name"]
                await cancel_one(client, host.api, agent)  # warm-up
                latencies: list[float] = []
                problems: list[str] = []
                for start in range(0, cancels, concurrency):
                    batch = min(concurrency, cancels - start)
                    for result in await asyncio.gather(*(cancel_one(client, host.api, agent) for _ in range(batch))):
                        (latencies if isinstance(result, float) else problems).append(result)  # type: ignore[arg-type]
                return latencies, problems
        finally:
            host.stop()


async def _one_turn(buffer: ValkeyStreamBuffer, chunks: int, *, watched: bool) -> float:
    session = uuid.uuid4().hex
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        if watched:
            await stack.enter_async_context(buffer.watch_cancellation(session, "t"))
        for i in range(chunks):
            await buffer.write_chunk(session, f"token{i} ", correlation_id="t")
        await buffer.write_completion(session, correlation_id="t")
    return chunks / (time.perf_counter() - started)


async def write_path_with_and_without_the_check(
    chunks: int = 20_000, rounds: int = 10
) -> tuple[float, float, float, float]:
    """Median chunks/s watched and not watched, the median of the rounds' ratios, and the checks per second."""
    server = ValkeyProcess().start()
    buffer = ValkeyStreamBuffer(ValkeySettings(host=server.host, port=server.port, stream_maxlen=None))
    try:
        await _one_turn(buffer, 1000, watched=True)
        checks = 0
        watched_seconds = 0.0

        async def watched() -> float:
            nonlocal checks, watched_seconds
            before = server.command_calls().get("sismember", 0)
            speed = await _one_turn(buffer, chunks, watched=True)
            checks += server.command_calls().get("sismember", 0) - before
            watched_seconds += chunks / speed
            return speed

        unwatched_speed, watched_speed, ratio = await alternating_rounds(
            lambda: _one_turn(buffer, chunks, watched=False), watched, rounds
        )
        return watched_speed, unwatched_speed, ratio, checks / watched_seconds
    finally:
        await buffer.aclose()
        server.stop()


async def main(cancels: int, concurrency: int) -> None:
    latencies, problems = await cancel_latencies(cancels, concurrency)
    if latencies:
        print(
            f"cancel request -> `cancelled` event at the reader (n={len(latencies)}, {concurrency} at a time, "
            f"40 ms chunks): p50 {pct(latencies, 0.5) * 1000:.0f} ms p99 {pct(latencies, 0.99) * 1000:.0f} ms "
            f"max {max(latencies) * 1000:.0f} ms"
        )
    if problems:
        print(f"{len(problems)} cancels did not end with `cancelled`: {sorted(set(problems))}")
    checked, unchecked, ratio, checks_per_second = await write_path_with_and_without_the_check()
    print(
        f"write path, one turn of 20,000 chunks (10 rounds, medians): watched for cancellation {checked:,.0f} "
        f"chunks/s | not watched {unchecked:,.0f} chunks/s | ratio {ratio:.2f}x (median of the rounds') | a "
        f"watched turn asked {checks_per_second:.1f} times a second (its batches and its poll together)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cancels", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.cancels, arguments.concurrency))
