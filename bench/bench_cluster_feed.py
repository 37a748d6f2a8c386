"""The live feed's ways of learning of new entries, side by side in one run.

Run: .venv/bin/python -m bench.bench_cluster_feed   (starts a 3-primary cluster and a standalone server)

Cluster: the polling feed (a pipelined XREAD per followed stream, 5-50 ms apart; the fallback)
against the notified feed (sharded pub/sub published with every write, a safety poll every 5 s).
Standalone, for reference and for the choice of its default: the blocking feed (one multi-key
XREAD BLOCK) against the notified feed with plain pub/sub. Printed per feed: Valkey commands per
second while 100 and 1,000 readers (one stream each) wait, delivery latency from the write call to
the reader, and the write path's chunks/s for one turn (with and without the publish). Nothing is
asserted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

from bench._stats import pct
from bench.bench_buffer import callback_write_path, fanout_latency
from tests.valkey_servers import ValkeyCluster, ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer

IDLE_WINDOW = 10.0  # seconds: two safety polls


def _calls(nodes: list[ValkeyProcess]) -> int:
    """Commands run by all nodes so far, but INFO (which this benchmark sends to count them)."""
    return sum(calls for node in nodes for name, calls in node.command_calls().items() if name != "info")


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def idle_commands_per_second(buffer: ValkeyStreamBuffer, nodes: list[ValkeyProcess], readers: int) -> float:
    """Commands/s on all nodes while ``readers`` readers, one stream each, wait for a turn that has not started."""
    sessions = [uuid.uuid4().hex for _ in range(readers)]
    tasks = [asyncio.create_task(_drain(buffer.read_stream(s, correlation_id="t", idle_timeout=120))) for s in sessions]
    for _ in range(600):  # every reader has joined, within 30 s
        if buffer.reader_stats().active == readers:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # past the joining: subscriptions active, polls backed off
    before = _calls(nodes)
    await asyncio.sleep(IDLE_WINDOW)
    rate = (_calls(nodes) - before) / IDLE_WINDOW
    await asyncio.gather(*(buffer.write_completion(s, correlation_id="t") for s in sessions))
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return rate


async def write_path(buffers: dict[str, ValkeyStreamBuffer], chunks: int, runs: int = 5) -> dict[str, float]:
    """Median chunks/s of one turn per buffer, the buffers taking turns run after run."""
    figures: dict[str, list[float]] = {name: [] for name in buffers}
    for buffer in buffers.values():
        await callback_write_path(buffer, 1000)  # warm up the clients
    for _ in range(runs):
        for name, buffer in buffers.items():
            figures[name].append(await callback_write_path(buffer, chunks))
    return {name: statistics.median(values) for name, values in figures.items()}


async def measure(name: str, buffer: ValkeyStreamBuffer, nodes: list[ValkeyProcess]) -> list[str]:
    idle_100 = await idle_commands_per_second(buffer, nodes, 100)
    idle_1000 = await idle_commands_per_second(buffer, nodes, 1000)
    few = await fanout_latency(buffer, streams=10, readers_per_stream=1, rounds=100)
    many = await fanout_latency(buffer, streams=100, readers_per_stream=10, rounds=20)
    mode = buffer.reader_stats().live_feed
    return [
        f"  {name} ({mode}): idle {idle_100:,.1f} commands/s for 100 readers, {idle_1000:,.1f} for 1,000 "
        f"({idle_1000 / 1000:.2f} per stream per s)",
        f"  {name}: delivery 10 readers p50 {pct(few, 0.5) * 1000:.2f} ms p99 {pct(few, 0.99) * 1000:.2f} ms "
        f"(n={len(few)}); 1,000 readers on 100 streams p50 {pct(many, 0.5) * 1000:.2f} ms "
        f"p99 {pct(many, 0.99) * 1000:.2f} ms (n={len(many)})",
    ]


async def side_by_side(title: str, settings: ValkeySettings, nodes: list[ValkeyProcess], feeds: list[str]) -> None:
    buffers = {feed: ValkeyStreamBuffer(settings, live_feed=feed) for feed in feeds}  # type: ignore[arg-type]
    try:
        print(title)
        for feed, buffer in buffers.items():
            for line in await measure(feed, buffer, nodes):
                print(line, flush=True)
        speeds = await write_path(buffers, chunks=20_000)
        publish = {feed: " (publishes)" if feed == "notifications" else "" for feed in feeds}
        print(
            "  write path, one turn of 20,000 chunks: "
            + " | ".join(f"{feed}{publish[feed]} {speed:,.0f} chunks/s" for feed, speed in speeds.items())
        )
    finally:
        for buffer in buffers.values():
            await buffer.aclose()


async def main() -> None:
    started = time.monotonic()
    cluster = ValkeyCluster().start()
    try:
        settings = ValkeySettings(host=cluster.host, port=cluster.port, cluster=True, stream_maxlen=None)
        await side_by_side("cluster, 3 primaries on loopback:", settings, cluster.nodes, ["polling", "notifications"])
    finally:
        cluster.stop()
    server = ValkeyProcess().start()
    try:
        settings = ValkeySettings(host=server.host, port=server.port, stream_maxlen=None)
        await side_by_side("standalone (reference):", settings, [server], ["blocking", "notifications"])
    finally:
        server.stop()
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
