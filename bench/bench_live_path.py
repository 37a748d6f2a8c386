"""The live path's promises, measured side by side: this checkout's valkey_buffer against a baseline revision.

Run: .venv/bin/python -m bench.bench_live_path [--baseline REV] [--write-path-only]
(default baseline: 6f03983, before the live-path fixes)

The baseline's ``valkey_buffer`` is taken from git (``git archive``) into a temporary folder and
imported under another name, so both run in one process against the same valkey-server. Printed:
time to first chunk after idle pauses, entries missed at the resume hand-off, chunks shown twice
under slow Valkey replies, and the write path's chunks/s per turn. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench._baseline import load_baseline
from bench._stats import alternating_rounds, pct
from bench.bench_buffer import callback_write_path
from tests.busy_session import busy_session
from tests.slow_reply_proxy import SlowReplyProxy
from tests.valkey_servers import ValkeyProcess

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "6f03983"


def _sid() -> str:
    return uuid.uuid4().hex


def _settings(vb: ModuleType, server: ValkeyProcess, **changes: Any) -> Any:
    return vb.ValkeySettings(host=server.host, port=server.port, **changes)


async def first_chunk_after_pause(vb: ModuleType, server: ValkeyProcess, pause: float) -> float:
    """One turn to its end on a buffer of its own, a pause, then a new session's first chunk: seconds."""
    buffer = vb.ValkeyStreamBuffer(_settings(vb, server, read_block_ms=5000))
    try:
        first = _sid()
        reader = asyncio.create_task(_drain(buffer.read_stream(first, correlation_id="a")))
        await asyncio.sleep(0.05)
        await buffer.write_chunk(first, "warm-up", correlation_id="a")
        await buffer.write_completion(first, correlation_id="a")
        await asyncio.wait_for(reader, 10)
        await asyncio.sleep(pause)
        session = _sid()
        arrived = asyncio.get_running_loop().create_future()

        async def follow() -> None:
            async for chunk in buffer.read_stream(session, correlation_id="b"):
                if not arrived.done():
                    arrived.set_result(time.monotonic())
                if chunk.is_terminal:
                    return

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.02)
        written = time.monotonic()
        await buffer.write_chunk(session, "first", correlation_id="b")
        latency = await asyncio.wait_for(asyncio.shield(arrived), 15) - written
        await buffer.write_completion(session, correlation_id="b")
        await asyncio.wait_for(follower, 10)
        return latency
    finally:
        await buffer.aclose()


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def resume_gaps(vb: ModuleType, server: ValkeyProcess, rounds: int, seed: int = 7) -> tuple[int, int, int]:
    """Resumers joining a session that other readers follow live: (entries missed, expected, readers hung)."""
    rng = random.Random(seed)
    missed = expected_total = hung = 0
    for _ in range(rounds):
        buffer = vb.ValkeyStreamBuffer(_settings(vb, server))
        try:
            session = await busy_session(buffer, server, rng, resumers=8, live_readers=3, reader_timeout=10)
        finally:
            await buffer.aclose()
        hung += session.hung
        for cursor, got in session.resumed:
            expected = session.expected_after(cursor)
            if cursor == session.stream_ids[-1]:
                continue  # at the turn's end: a hang, not a gap, when the reader does not end
            missed += len(set(expected) - set(got))
            expected_total += len(expected)
    return missed, expected_total, hung


async def duplicates_under_slow_replies(vb: ModuleType, server: ValkeyProcess) -> tuple[int, int]:
    """Chunks a live reader is shown twice while Valkey's replies come after the request timeout."""
    proxy = SlowReplyProxy(server.port)
    writer = vb.ValkeyStreamBuffer(vb.ValkeySettings(host="127.0.0.1", port=proxy.port, request_timeout_ms=300))
    readers = vb.ValkeyStreamBuffer(_settings(vb, server))
    session = _sid()
    try:
        shown: list[int] = []

        async def follow() -> None:
            async for chunk in readers.read_stream(session, correlation_id="t"):
                if chunk.kind == "message":
                    shown.append(chunk.sequence)

        reader = asyncio.create_task(follow())
        await asyncio.sleep(0.1)
        for i in range(120):
            if i == 30:
                proxy.hold_replies(0.45)
            if i == 70:
                proxy.hold_replies(0)
            await writer.write_chunk(session, f"w{i} ", correlation_id="t")
            await asyncio.sleep(0.01)
        await writer.write_completion(session, correlation_id="t")
        await asyncio.wait_for(reader, 30)
    finally:
        await writer.aclose()
        await readers.aclose()
        proxy.close()
    return len(shown) - len(set(shown)), len(shown)


async def write_path(vb: ModuleType, server: ValkeyProcess, chunks: int = 20_000) -> float:
    """chunks/s of one turn through write_chunk (after a warm-up)."""
    buffer = vb.ValkeyStreamBuffer(_settings(vb, server, stream_maxlen=None))
    try:
        await callback_write_path(buffer, 1000)
        return await callback_write_path(buffer, chunks)
    finally:
        await buffer.aclose()


async def _or_timeout(name: str, what: str, measurement: Awaitable[str], seconds: float = 180) -> None:
    # A scenario the baseline never finishes (a reader that waits for an end that was lost) is a
    # finding to print, not a reason to stop.
    try:
        print(f"{name:>18}: {what}: {await asyncio.wait_for(measurement, seconds)}", flush=True)
    except TimeoutError:
        print(f"{name:>18}: {what}: did not finish (a reader timed out)", flush=True)


async def _first_chunks(vb: ModuleType, server: ValkeyProcess) -> str:
    pauses = [i * 0.25 for i in range(23)]  # 0 to 5.5 s: the whole 5 s blocking-read window
    latencies = await asyncio.gather(*(first_chunk_after_pause(vb, server, p) for p in pauses))
    return (
        f"p50 {pct(latencies, 0.5) * 1000:.1f} ms p99 {pct(latencies, 0.99) * 1000:.1f} ms "
        f"max {max(latencies) * 1000:.1f} ms (n={len(latencies)})"
    )


async def _gaps(vb: ModuleType, server: ValkeyProcess) -> str:
    missed, expected, hung = await resume_gaps(vb, server, rounds=10)
    return f"{missed} entries missed of {expected} expected; {hung} of 110 readers not ended 10 s after the turn"


async def _duplicates(vb: ModuleType, server: ValkeyProcess) -> str:
    twice, shown = await duplicates_under_slow_replies(vb, server)
    return f"{twice} chunks shown twice of {shown}"


async def _write_paths(baseline: ModuleType, ours: ModuleType, server: ValkeyProcess, rounds: int = 10) -> None:
    base_speed, our_speed, ratio = await alternating_rounds(
        lambda: write_path(baseline, server), lambda: write_path(ours, server), rounds
    )
    print(
        f"write path, one turn of 20,000 chunks ({rounds} rounds, medians): baseline {base_speed:,.0f} chunks/s | "
        f"this checkout {our_speed:,.0f} chunks/s | ratio {ratio:.2f}x (median of the rounds')"
    )


async def main(baseline_revision: str, write_path_only: bool) -> None:
    server = ValkeyProcess().start()
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as folder:
        implementations = {
            f"baseline {baseline_revision}": load_baseline(baseline_revision, Path(folder))[0],
            "this checkout": importlib.import_module("valkey_buffer"),
        }
        try:
            if write_path_only:
                await _write_paths(*implementations.values(), server)
                return
            for name, vb in implementations.items():
                await _or_timeout(name, "first chunk after idle pauses of 0-5.5 s", _first_chunks(vb, server))
            for name, vb in implementations.items():
                await _or_timeout(name, "resume hand-off", _gaps(vb, server))
            for name, vb in implementations.items():
                await _or_timeout(name, "replies held 450 ms past a 300 ms timeout", _duplicates(vb, server))
            await _write_paths(*implementations.values(), server)
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare with")
    parser.add_argument("--write-path-only", action="store_true", help="measure the write path alone")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.baseline, arguments.write_path_only))
