"""The live path's promises, measured side by side: this checkout's valkey_buffer against a baseline revision.

Run: .venv/bin/python -m bench.bench_live_path [--baseline REV]   (default: 6f03983, before the live-path fixes)

The baseline's ``valkey_buffer`` is taken from git (``git archive``) into a temporary folder and
imported under another name, so both run in one process against the same valkey-server. Printed:
time to first chunk after idle pauses, entries missed at the resume hand-off, chunks shown twice
under slow Valkey replies, and the write path's chunks/s per turn. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.bench_buffer import callback_write_path
from tests.busy_session import busy_session
from tests.slow_reply_proxy import SlowReplyProxy
from tests.valkey_servers import ValkeyProcess

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "6f03983"


def load_baseline(revision: str, into: Path) -> ModuleType:
    """Import ``valkey_buffer`` as it was at ``revision``, as the package ``valkey_buffer_baseline``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "valkey_buffer"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "valkey_buffer").rename(into / "valkey_buffer_baseline")
    sys.path.insert(0, str(into))
    return importlib.import_module("valkey_buffer_baseline")


def _sid() -> str:
    return uuid.uuid4().hex


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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


async def resume_gaps(vb: ModuleType, server: ValkeyProcess, rounds: int, seed: int = 7) -> tuple[int, int]:
    """Resumers joining a session that other readers follow live: (entries missed, entries expected)."""
    rng = random.Random(seed)
    missed = expected_total = 0
    for _ in range(rounds):
        buffer = vb.ValkeyStreamBuffer(_settings(vb, server))
        try:
            session = await busy_session(buffer, server, rng, resumers=8, live_readers=3)
        finally:
            await buffer.aclose()
        for cursor, got in session.resumed:
            expected = session.expected_after(cursor)
            missed += len(set(expected) - set(got))
            expected_total += len(expected)
    return missed, expected_total


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
    """chunks/s of one turn through write_chunk, median of 3 (after a warm-up)."""
    buffer = vb.ValkeyStreamBuffer(_settings(vb, server, stream_maxlen=None))
    try:
        await callback_write_path(buffer, 1000)
        return statistics.median([await callback_write_path(buffer, chunks) for _ in range(3)])
    finally:
        await buffer.aclose()


async def main(baseline_revision: str) -> None:
    server = ValkeyProcess().start()
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as folder:
        implementations = {
            f"baseline {baseline_revision}": load_baseline(baseline_revision, Path(folder)),
            "this checkout": importlib.import_module("valkey_buffer"),
        }
        try:
            pauses = [i * 0.25 for i in range(23)]  # 0 to 5.5 s: the whole 5 s blocking-read window
            for name, vb in implementations.items():
                latencies = await asyncio.gather(*(first_chunk_after_pause(vb, server, p) for p in pauses))
                print(
                    f"{name:>18}: first chunk after idle pauses of 0-5.5 s (n={len(latencies)}): "
                    f"p50 {_pct(latencies, 0.5) * 1000:.1f} ms p99 {_pct(latencies, 0.99) * 1000:.1f} ms "
                    f"max {max(latencies) * 1000:.1f} ms"
                )
            for name, vb in implementations.items():
                missed, expected = await resume_gaps(vb, server, rounds=10)
                print(f"{name:>18}: resume hand-off: {missed} entries missed of {expected} expected (80 resumers)")
            for name, vb in implementations.items():
                twice, shown = await duplicates_under_slow_replies(vb, server)
                print(f"{name:>18}: replies held 450 ms past a 300 ms timeout: {twice} chunks shown twice of {shown}")
            speeds = {name: await write_path(vb, server) for name, vb in implementations.items()}
            base, ours = speeds.values()
            print(
                f"write path, one turn of 20,000 chunks: baseline {base:,.0f} chunks/s | this checkout {ours:,.0f} "
                f"chunks/s | ratio {ours / base:.2f}x"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare with")
    asyncio.run(main(parser.parse_args().baseline))
