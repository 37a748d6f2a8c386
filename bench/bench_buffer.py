"""Benchmarks of valkey_buffer against one real valkey-server, printed side by side.

Run: .venv/bin/python -m bench.bench_buffer [--baseline REV] [--idempotency]   (starts its own valkey-server)

With ``--baseline REV`` it then measures the delivery figures (live feed latency, 1,000 readers, the
cluster's notifications feed) of this checkout and of ``REV``'s ``valkey_buffer`` in alternating
rounds, and prints both with their ratios. ``--idempotency`` measures only what the idempotency check
costs a write batch: the buffer's append script against the same script without the mark, and
against the atomic batch (MULTI/EXEC) of plain XADDs.

Figures are ratios against baselines measured in the same run on the same server, not targets
asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import valkey.asyncio as valkey_py
from glide import Batch, GlideClient, GlideClientConfiguration, NodeAddress, Script

import valkey_buffer
from bench._baseline import load_baseline
from bench._stats import alternating_rounds, pct
from tests.valkey_servers import ValkeyCluster, ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer, cancel_key
from valkey_buffer._idempotent_append import APPEND_SCRIPT, Entry, append_arguments, marks_key


def _sid() -> str:
    return uuid.uuid4().hex


async def _glide(server: ValkeyProcess) -> GlideClient:
    return await GlideClient.create(GlideClientConfiguration([NodeAddress(server.host, server.port)]))


async def callback_write_path(buffer: ValkeyStreamBuffer, chunks: int) -> float:
    session = _sid()
    started = time.perf_counter()
    for i in range(chunks):
        await buffer.write_chunk(session, f"token{i} ", correlation_id="t")
    await buffer.write_completion(session, correlation_id="t")
    return chunks / (time.perf_counter() - started)


async def raw_glide_sequential(client: GlideClient, chunks: int) -> float:
    key = f"agent-stream:{_sid()}"
    started = time.perf_counter()
    for i in range(chunks):
        await client.xadd(key, [("text", f"token{i} "), ("sequence", str(i)), ("timestamp", "0")])
    return chunks / (time.perf_counter() - started)


async def reference_style(server: ValkeyProcess, chunks: int) -> float:
    # The reference sample's writer: a new connection per chunk, XADD then EXPIRE.
    key = f"agent-stream:{_sid()}"
    started = time.perf_counter()
    for i in range(chunks):
        client = valkey_py.Valkey(host=server.host, port=server.port)
        await client.xadd(key, {"text": f"token{i} ", "sequence": i, "timestamp": 0})
        await client.expire(key, 3600)
        await client.aclose()
    return chunks / (time.perf_counter() - started)


async def concurrent_turns(buffer: ValkeyStreamBuffer, turns: int, chunks: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(callback_write_path(buffer, chunks) for _ in range(turns)))
    return turns * chunks / (time.perf_counter() - started)


async def raw_glide_concurrent(client: GlideClient, turns: int, chunks: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(raw_glide_sequential(client, chunks) for _ in range(turns)))
    return turns * chunks / (time.perf_counter() - started)


async def fanout_latency(buffer: ValkeyStreamBuffer, streams: int, readers_per_stream: int, rounds: int):  # type: ignore[no-untyped-def]
    sessions = [_sid() for _ in range(streams)]
    latencies: list[float] = []
    sent: dict[str, float] = {}
    ready = asyncio.Event()
    joined = 0

    async def reader(session: str) -> None:
        nonlocal joined
        stream = buffer.read_stream(session, correlation_id="t", idle_timeout=30)
        joined += 1
        if joined == streams * readers_per_stream:
            ready.set()
        async for chunk in stream:
            if chunk.kind == "message":
                latencies.append(time.perf_counter() - sent[chunk.text])

    tasks = [asyncio.create_task(reader(s)) for s in sessions for _ in range(readers_per_stream)]
    await ready.wait()
    await asyncio.sleep(0.5)  # let every reader join the live feed
    for r in range(rounds):
        for session in sessions:
            text = f"{session}:{r}"
            sent[text] = time.perf_counter()
            await buffer.write_chunk(session, text, correlation_id="t")
        await asyncio.sleep(0.02)
    for session in sessions:
        await buffer.write_completion(session, correlation_id="t")
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return latencies


async def polling_latency(buffer: ValkeyStreamBuffer, samples: int) -> list[float]:
    # Baseline: a reader that polls with a non-blocking read once a second.
    session = _sid()
    latencies: list[float] = []
    sent: dict[str, float] = {}
    done = asyncio.Event()

    async def poller() -> None:
        cursor = "0-0"
        while not done.is_set():
            for chunk in await buffer.read_available(session, cursor):
                cursor = chunk.entry_id
                if chunk.kind == "message":
                    latencies.append(time.perf_counter() - sent[chunk.text])
            await asyncio.sleep(1.0)

    task = asyncio.create_task(poller())
    for i in range(samples):
        await asyncio.sleep(0.37)  # not in step with the poll interval
        sent[str(i)] = time.perf_counter()
        await buffer.write_chunk(session, str(i), correlation_id="t")
    await asyncio.sleep(1.1)
    done.set()
    await task
    return latencies


def _connections(server: ValkeyProcess) -> int:
    return sum(1 for line in str(server.command("CLIENT", "LIST")).splitlines() if "name=valkey-buffer" in line)


async def resume_tail(buffer: ValkeyStreamBuffer, server: ValkeyProcess, entries: int) -> None:
    session = _sid()
    for i in range(entries):
        await buffer.write_chunk(session, f"{i:05d}", correlation_id="t")
    await buffer.write_completion(session, correlation_id="t")
    everything = await buffer.read_available(session)
    middle = everything[entries // 2 - 1].entry_id

    def net_out() -> int:
        info = str(server.command("INFO", "stats"))
        return int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("total_net_output_bytes")))

    before = net_out()
    started = time.perf_counter()
    full = [c async for c in buffer.read_stream(session)]
    full_time, full_bytes = time.perf_counter() - started, net_out() - before
    before = net_out()
    started = time.perf_counter()
    tail = [c async for c in buffer.read_stream(session, middle)]
    tail_time, tail_bytes = time.perf_counter() - started, net_out() - before
    assert tail == full[entries // 2 :]
    print(
        f"resume from the middle of {entries} entries: read {len(tail)} entries ({len(full)} from the start); "
        f"{tail_bytes / 1024:.0f} KiB vs {full_bytes / 1024:.0f} KiB sent by Valkey; "
        f"{tail_time * 1000:.1f} ms vs {full_time * 1000:.1f} ms"
    )


def _idle_calls(cluster: ValkeyCluster) -> int:
    # Every command but the INFO calls that count them.
    return sum(calls for name, calls in cluster.command_calls().items() if name != "info")


async def cluster_mode() -> None:
    # Cluster: readers are woken by sharded pub/sub (bench.bench_cluster_feed compares it with polling).
    cluster = ValkeyCluster().start()
    buffer = ValkeyStreamBuffer(ValkeySettings(host=cluster.host, port=cluster.port, cluster=True))
    try:
        await callback_write_path(buffer, 100)
        fan = await fanout_latency(buffer, streams=10, readers_per_stream=1, rounds=100)
        sessions = [_sid() for _ in range(100)]
        idle = [asyncio.create_task(buffer.read_available(s)) for s in sessions]
        await asyncio.gather(*idle)
        waiting = [asyncio.create_task(_drain(buffer.read_stream(s, idle_timeout=30))) for s in sessions]
        await asyncio.sleep(1.0)
        before = _idle_calls(cluster)
        await asyncio.sleep(10.0)  # two safety polls
        idle_rate = (_idle_calls(cluster) - before) / 10.0
        for session in sessions:
            await buffer.write_completion(session, correlation_id="t")
        await asyncio.gather(*waiting)
        print(
            f"cluster (3 primaries), {buffer.reader_stats().live_feed} live feed: latency p50 "
            f"{pct(fan, 0.5) * 1000:.2f} ms p99 {pct(fan, 0.99) * 1000:.2f} ms (n={len(fan)}); 100 idle "
            f"readers cost {idle_rate:,.1f} commands/s across the cluster"
        )
    finally:
        await buffer.aclose()
        cluster.stop()


async def _drain(stream) -> None:  # type: ignore[no-untyped-def]
    async for _ in stream:
        pass


async def main() -> None:
    server = ValkeyProcess().start()
    settings = ValkeySettings(host=server.host, port=server.port, stream_maxlen=None, read_block_ms=5000)
    buffer = ValkeyStreamBuffer(settings)
    raw = await _glide(server)
    try:
        chunks = 20_000
        await callback_write_path(buffer, 1000)  # warm up the clients
        ours = statistics.median([await callback_write_path(buffer, chunks) for _ in range(3)])
        raw_seq = statistics.median([await raw_glide_sequential(raw, 5000) for _ in range(3)])
        reference = await reference_style(server, 1000)
        print(
            f"write path, one turn: callback (group commit) {ours:,.0f} chunks/s | raw sequential GLIDE XADD "
            f"{raw_seq:,.0f} chunks/s | reference style (connection per chunk, XADD+EXPIRE) {reference:,.0f} chunks/s"
            f" | callback/raw {ours / raw_seq:.1f}x, callback/reference {ours / reference:.0f}x"
        )

        turns, per_turn = 100, 500
        ours_c = await concurrent_turns(buffer, turns, per_turn)
        raw_c = await raw_glide_concurrent(raw, turns, per_turn)
        print(
            f"{turns} concurrent turns x {per_turn} chunks: callback {ours_c:,.0f} chunks/s aggregate | "
            f"raw concurrent GLIDE XADD {raw_c:,.0f} chunks/s | ratio {ours_c / raw_c:.2f}x"
        )

        fan = await fanout_latency(buffer, streams=10, readers_per_stream=1, rounds=100)
        polled = await polling_latency(buffer, samples=15)
        print(
            f"delivery latency XADD -> reader: live feed p50 {pct(fan, 0.5) * 1000:.2f} ms p99 "
            f"{pct(fan, 0.99) * 1000:.2f} ms (n={len(fan)}) | 1 s polling p50 {pct(polled, 0.5) * 1000:.0f} ms "
            f"p99 {pct(polled, 0.99) * 1000:.0f} ms (n={len(polled)})"
        )

        many = asyncio.create_task(fanout_latency(buffer, streams=100, readers_per_stream=10, rounds=20))
        await asyncio.sleep(2.0)
        connections = _connections(server)
        many_latencies = await many
        print(
            f"1,000 live readers over 100 streams: {connections} Valkey connections in use "
            f"(writer + live feed), latency p50 {pct(many_latencies, 0.5) * 1000:.2f} ms "
            f"p99 {pct(many_latencies, 0.99) * 1000:.2f} ms (n={len(many_latencies)})"
        )

        await resume_tail(buffer, server, 10_000)
    finally:
        await buffer.aclose()
        await raw.close()
        server.stop()
    await cluster_mode()


DELIVERY_ROUNDS = 5


async def _delivery_rounds(
    label: str, buffers: dict[str, Any], streams: int, readers_per_stream: int, rounds: int
) -> None:
    """One delivery figure for each implementation, in alternating rounds: medians and the rounds' ratios."""
    p50: dict[str, list[float]] = {name: [] for name in buffers}
    p99: dict[str, list[float]] = {name: [] for name in buffers}
    names = list(buffers)
    for round_number in range(DELIVERY_ROUNDS):
        for name in names if round_number % 2 else reversed(names):
            latencies = await fanout_latency(buffers[name], streams, readers_per_stream, rounds)
            p50[name].append(pct(latencies, 0.5) * 1000)
            p99[name].append(pct(latencies, 0.99) * 1000)
    baseline, ours = names
    figures = " | ".join(
        f"{name} p50 {statistics.median(p50[name]):.2f} ms p99 {statistics.median(p99[name]):.2f} ms" for name in names
    )
    ratio_p50 = statistics.median(o / b for o, b in zip(p50[ours], p50[baseline], strict=True))
    ratio_p99 = statistics.median(o / b for o, b in zip(p99[ours], p99[baseline], strict=True))
    print(
        f"{label} ({DELIVERY_ROUNDS} rounds, medians): {figures} | this/baseline p50 {ratio_p50:.2f}x "
        f"p99 {ratio_p99:.2f}x (median of the rounds')"
    )


async def delivery_against(baseline_revision: str) -> None:
    """The delivery figures of this checkout and of ``baseline_revision``, measured side by side."""
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as folder:
        (baseline,) = load_baseline(baseline_revision, Path(folder))
        implementations = {f"baseline {baseline_revision}": baseline, "this checkout": valkey_buffer}
        server = ValkeyProcess().start()
        buffers = {
            name: vb.ValkeyStreamBuffer(
                vb.ValkeySettings(host=server.host, port=server.port, stream_maxlen=None, read_block_ms=5000)
            )
            for name, vb in implementations.items()
        }
        try:
            await _delivery_rounds("delivery XADD -> reader, live feed", buffers, 10, 1, 100)
            await _delivery_rounds("1,000 live readers over 100 streams", buffers, 100, 10, 20)
        finally:
            for buffer in buffers.values():
                await buffer.aclose()
            server.stop()
        cluster = ValkeyCluster().start()
        buffers = {
            name: vb.ValkeyStreamBuffer(vb.ValkeySettings(host=cluster.host, port=cluster.port, cluster=True))
            for name, vb in implementations.items()
        }
        try:
            await _delivery_rounds("cluster (3 primaries), notifications live feed", buffers, 10, 1, 100)
        finally:
            for buffer in buffers.values():
                await buffer.aclose()
            cluster.stop()


# The append script without its mark: every entry appended, the TTL refreshed; the same arguments.
_PLAIN_APPEND = Script(
    """
for _, entry in ipairs(cjson.decode(ARGV[6])) do
  local args = {KEYS[1], '*'}
  for j = 2, #entry do
    args[#args + 1] = entry[j]
  end
  redis.call('XADD', unpack(args))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 0
"""
)


def _entries(first: int, count: int) -> list[Entry]:
    return [
        Entry(
            sequence,
            [
                "text",
                f"token{sequence} ",
                "sequence",
                str(sequence),
                "timestamp",
                "1700000000000",
                "correlation_id",
                "t",
                "run",
                "0a1b2c3d",
                "agent",
                "TravelAgent",
            ],
            0,
        )
        for sequence in range(first, first + count)
    ]


async def _micros_per_batch(client: GlideClient, kind: str, size: int, count: int) -> float:
    """Write ``count`` batches of ``size`` new entries to a new stream one after another: µs per batch."""
    key = f"agent-stream:{_sid()}"
    keys = [key, marks_key(key), cancel_key(key)]
    started = time.perf_counter()
    for number in range(count):
        entries = _entries(number * size, size)
        if kind == "batch":
            batch = Batch(is_atomic=True)
            for entry in entries:
                batch.xadd(key, entry.pairs())
            batch.expire(key, 3600)
            await client.exec(batch, raise_on_error=True)
            continue
        arguments = append_arguments(
            correlation_id="t",
            run="0a1b2c3d",
            entries=entries,
            ttl_seconds=3600,
            maxlen=None,
            cancel_check=False,
            notify="",
        )
        script = APPEND_SCRIPT if kind == "idempotent" else _PLAIN_APPEND
        await client.invoke_script(script, keys=keys, args=arguments)  # type: ignore[arg-type]
    return (time.perf_counter() - started) / count * 1e6


async def idempotency_cost(batches: int = 2000, rounds: int = 10) -> None:
    """µs per write batch: the idempotent append script, the script without its mark, MULTI/EXEC of XADDs."""
    server = ValkeyProcess().start()
    client = await _glide(server)
    try:
        for size in (1, 16, 256):
            count = max(20, batches // size)

            def measure(kind: str, size: int = size, count: int = count) -> Callable[[], Awaitable[float]]:
                return lambda: _micros_per_batch(client, kind, size, count)

            await measure("idempotent")()  # warm up: the scripts are loaded on first use
            await measure("plain")()
            plain, idempotent, ratio = await alternating_rounds(measure("plain"), measure("idempotent"), rounds)
            batch, _, batch_ratio = await alternating_rounds(measure("batch"), measure("idempotent"), rounds)
            print(
                f"idempotency check, batches of {size} entries ({rounds} alternating rounds, medians): "
                f"append script {idempotent:,.1f} µs/batch | without the mark {plain:,.1f} µs/batch | "
                f"check alone {idempotent - plain:+,.1f} µs/batch ({ratio:.2f}x) | MULTI/EXEC XADDs {batch:,.1f} "
                f"µs/batch (script/batch {batch_ratio:.2f}x)"
            )
    finally:
        await client.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="also measure delivery against this git revision's valkey_buffer")
    parser.add_argument(
        "--idempotency", action="store_true", help="only measure what the idempotency check costs a write batch"
    )
    arguments = parser.parse_args()
    if arguments.idempotency:
        asyncio.run(idempotency_cost())
        raise SystemExit(0)
    asyncio.run(main())
    if arguments.baseline:
        asyncio.run(delivery_against(arguments.baseline))
