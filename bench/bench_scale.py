"""Many streamed turns on one instance: N concurrent turns at a model's pace, each followed live.

Run: .venv/bin/python -m bench.bench_scale [--baseline REV] [--n 100 300 1000 2000] [--app-heap] [--tune-collector]
[--writers-elsewhere] [--http] [--http-only]

One process, one event loop, one real valkey-server (as on one Functions instance): N turns, each
written through the buffer at a model's pace (a chunk every 50 ms) and followed by one live reader
(``read_stream``). For each N, the baseline revision's ``valkey_buffer`` and this checkout's are
measured one after the other in the same run (which goes first alternates with N). Printed per N
and revision: chunks delivered per second of those offered, delivery latency (from when the chunk
was due to the reader, p50/p99), and the valkey-server's CPU seconds per second (``INFO cpu``).
With ``--writers-elsewhere`` the writers run in a process of their own (``_scale_writers``, same
revision): the deployed shape on Flex Consumption, where the durable functions that write the
streams scale on instances apart from the HTTP functions that follow them.
Then the write path of one turn for both (as ``bench_live_path --write-path-only``), what idle
streams cost, and with ``--http`` 1,000 concurrent
SSE clients on one local host (``python -m devhost``, real sockets). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from glide import GlideClient, GlideClientConfiguration, NodeAddress

from bench._baseline import load_baseline
from bench._stats import pct
from bench.bench_live_path import _write_paths
from tests.valkey_servers import ValkeyCluster, ValkeyProcess

DEFAULT_BASELINE = "6e531ac"
CHUNK_INTERVAL = 0.05  # a model's pace: 20 chunks a second per turn
WARM_UP = 1.0  # seconds after the writers start before chunks count (turns start staggered)
_PYTHON_THRESHOLDS = gc.get_threshold()
_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ScaleResult:
    """One round: N turns for ``seconds`` each."""

    offered_per_s: float
    delivered_per_s: float
    latencies_ms: list[float]
    valkey_cpu: float  # valkey-server CPU seconds per second of the window
    errors: list[str] = field(default_factory=list)
    entries_ok: int = 0  # readers that got exactly their turn's chunks, in order


async def _valkey_cpu_seconds(client: GlideClient) -> float:
    info = await client.custom_command(["INFO", "cpu"])
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


def turn_starts(turns: int, start: float) -> list[float]:
    """When each turn's first chunk is due: staggered over one chunk interval, the same for a given N."""
    rng = random.Random(turns)
    return [start + rng.random() * CHUNK_INTERVAL for _ in range(turns)]


async def write_turn(buffer: Any, session: str, start: float, chunks: int, written: list[float]) -> None:
    """One turn at a model's pace from ``start``: chunk ``i`` is due at ``start + i * CHUNK_INTERVAL``."""
    # Paced on an absolute schedule: a writer the loop delays catches up rather than drifts.
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    for i in range(chunks):
        due = start + i * CHUNK_INTERVAL
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        # Latency counts from when the model produced the chunk, not from the write call: a
        # writer the busy loop wakes late is late for its reader too.
        written[i] = due
        await buffer.write_chunk(session, f"{i} ", correlation_id="c")
    await buffer.write_completion(session, correlation_id="c")


@dataclass(frozen=True)
class WritersElsewhere:
    """Run a round's writers in a process of their own (``_scale_writers``), as the durable instances."""

    module: str  # the buffer package the writers import
    path: str  # the folder to import it from ('' for this checkout)
    options: tuple[str, ...]  # --app-heap, --tune-collector, as this process

    async def start(self, server: ValkeyProcess, sessions: list[str], seconds: float) -> asyncio.subprocess.Process:
        """Start the writers; returns once they are connected and wait for the schedule's start."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "bench._scale_writers", "--module", self.module, "--path", self.path, *self.options),
            *("--host", server.host, "--port", str(server.port), "--seconds", str(seconds)),
            *("--sessions", ",".join(sessions)),
            cwd=_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        while (line := await asyncio.wait_for(process.stdout.readline(), 120)) != b"ready\n":
            if not line:
                raise RuntimeError(f"the writers' process exited with {await process.wait()}")
        return process


async def scale_round(
    vb: ModuleType, server: ValkeyProcess, turns: int, seconds: float, elsewhere: WritersElsewhere | None = None
) -> ScaleResult:
    """``turns`` concurrent turns of ``seconds`` each at a chunk every 50 ms, each with one live reader.

    The writers run in this process, or with ``elsewhere`` in a process of their own.
    """
    buffer = vb.ValkeyStreamBuffer(vb.ValkeySettings(host=server.host, port=server.port, stream_maxlen=None))
    probe = await GlideClient.create(GlideClientConfiguration([NodeAddress(server.host, server.port)]))
    chunks = int(seconds / CHUNK_INTERVAL)
    sessions = [uuid.uuid4().hex for _ in range(turns)]
    written: list[list[float]] = [[0.0] * chunks for _ in range(turns)]
    arrived: list[list[float]] = [[] for _ in range(turns)]
    texts: list[list[str]] = [[] for _ in range(turns)]
    errors: list[str] = []
    window: list[float] = [0.0, 0.0]

    async def read(index: int) -> None:
        try:
            async for chunk in buffer.read_stream(sessions[index], correlation_id="c"):
                if chunk.kind == "message":
                    arrived[index].append(time.perf_counter())
                    texts[index].append(chunk.text)
                elif chunk.is_terminal:
                    return
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")

    writers_process = await elsewhere.start(server, sessions, seconds) if elsewhere else None
    try:
        readers = [asyncio.create_task(read(i)) for i in range(turns)]
        # Every reader subscribed and caught up (an empty stream) before the first chunk.
        deadline = time.monotonic() + 60
        while buffer.reader_stats().active < turns and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        t0 = time.perf_counter() + 0.1
        starts = turn_starts(turns, t0)
        if writers_process is None:
            writers = [
                asyncio.create_task(write_turn(buffer, sessions[i], starts[i], chunks, written[i]))
                for i in range(turns)
            ]
        else:
            # perf_counter is the system's monotonic clock: the same in both processes.
            assert writers_process.stdin is not None
            writers_process.stdin.write(f"{t0!r}\n".encode())
            await writers_process.stdin.drain()
            writers = [asyncio.create_task(writers_process.wait())]
            for index, start in enumerate(starts):
                written[index][:] = [start + i * CHUNK_INTERVAL for i in range(chunks)]
        window[:] = [t0 + WARM_UP, t0 + seconds]
        await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
        cpu_before = await _valkey_cpu_seconds(probe)
        await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
        cpu_after = await _valkey_cpu_seconds(probe)
        cpu_elapsed = time.perf_counter() - window[0]
        await asyncio.wait_for(asyncio.gather(*writers), seconds * 20 + 60)
        await asyncio.wait_for(asyncio.gather(*readers), seconds * 20 + 60)
    finally:
        if writers_process is not None and writers_process.returncode is None:
            writers_process.kill()
            await writers_process.wait()
        await buffer.aclose()
        await probe.close()
    in_window = sum(window[0] <= t < window[1] for times in arrived for t in times)
    latencies = [
        (t - written[index][i]) * 1000
        for index, times in enumerate(arrived)
        for i, t in enumerate(times)
        if window[0] <= written[index][i] < window[1]
    ]
    expected = [f"{i} " for i in range(chunks)]
    return ScaleResult(
        offered_per_s=turns / CHUNK_INTERVAL,
        delivered_per_s=in_window / (window[1] - window[0]),
        latencies_ms=latencies,
        valkey_cpu=(cpu_after - cpu_before) / cpu_elapsed,
        errors=errors,
        entries_ok=sum(got == expected for got in texts),
    )


def _commands(server: ValkeyProcess | ValkeyCluster) -> int:
    # Every command but the INFO calls that count them.
    return sum(calls for name, calls in server.command_calls().items() if name != "info")


async def idle_cost(vb: ModuleType, server: ValkeyProcess | ValkeyCluster, readers: int, seconds: float) -> str:
    """``readers`` live readers of turns that write nothing: Valkey commands/s and this process's CPU s/s."""
    settings = vb.ValkeySettings(host=server.host, port=server.port, cluster=isinstance(server, ValkeyCluster))
    buffer = vb.ValkeyStreamBuffer(settings)

    async def read(session: str) -> None:
        async for _ in buffer.read_stream(session, correlation_id="idle", idle_timeout=seconds * 10):
            pass

    tasks = [asyncio.create_task(read(uuid.uuid4().hex)) for _ in range(readers)]
    try:
        deadline = time.monotonic() + 60
        while buffer.reader_stats().active < readers and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # every reader caught up and followed
        commands, cpu, started = _commands(server), time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        rate, host_cpu = (_commands(server) - commands) / elapsed, (time.process_time() - cpu) / elapsed
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await buffer.aclose()
    kind = "cluster (notifications)" if isinstance(server, ValkeyCluster) else "standalone (blocking read)"
    return (
        f"idle streams, {kind}: {readers} readers waiting {seconds:g} s: {rate:.1f} Valkey commands/s "
        f"({rate / readers:.3f} per stream), host CPU {host_cpu:.3f} s/s "
        f"({host_cpu / readers * 1e6:.0f} µs/s per stream)"
    )


def _line(name: str, turns: int, result: ScaleResult) -> str:
    share = result.delivered_per_s / result.offered_per_s
    line = (
        f"N={turns:>5} {name:>17}: delivered {result.delivered_per_s:8,.0f} of {result.offered_per_s:8,.0f} chunks/s "
        f"({share:6.1%}) | latency p50 {pct(result.latencies_ms, 0.5):6.1f} ms p99 "
        f"{pct(result.latencies_ms, 0.99):7.1f} ms | Valkey CPU {result.valkey_cpu:.2f} s/s | "
        f"readers exact {result.entries_ok}/{turns}"
    )
    if result.errors:
        line += f" | {len(result.errors)} reader errors, first: {result.errors[0]}"
    return line


async def scale_curve(
    implementations: dict[str, ModuleType],
    server: ValkeyProcess,
    ns: list[int],
    seconds: float,
    elsewhere: dict[str, WritersElsewhere] | None = None,
) -> None:
    where = "written in another process" if elsewhere else "written and read in this process"
    print(
        f"N turns, each a chunk every {CHUNK_INTERVAL * 1000:.0f} ms for {seconds:g} s, one live reader each, {where}:"
    )
    for position, turns in enumerate(ns):
        order = list(implementations.items())
        if position % 2:
            order.reverse()  # which revision goes first alternates: the machine drifts over a run
        results = {}
        for name, vb in order:
            results[name] = await scale_round(vb, server, turns, seconds, elsewhere[name] if elsewhere else None)
        for name in implementations:
            print(_line(name, turns, results[name]), flush=True)


async def http_clients(clients: int, chunk_delay_ms: int, turns: int, *, turns_elsewhere: bool = False) -> None:
    """``clients`` concurrent SSE clients on one local host, following ``turns`` scripted turns.

    With ``turns_elsewhere`` the host the clients talk to runs no turns: a second host that shares its
    durable backend and Valkey runs them (``--no-worker``/``--backend``), as the durable instances do.
    """
    from tests.e2e.devhost_process import DevHostProcess, host_pair

    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-http-"))
    env = {"SCRIPTED_CHUNK_DELAY_MS": str(chunk_delay_ms)}
    args = ["--max-concurrent-turns", str(max(turns, 10))]
    with contextlib.ExitStack() as hosts:
        if turns_elsewhere:
            host, _ = hosts.enter_context(host_pair(workdir, "bench-scale", env=env, args=args))
        else:
            host = DevHostProcess.start(workdir, env=env, args=args, name="bench-scale")
            hosts.callback(host.stop)
        await _follow_over_http(host, clients, turns)


async def _follow_over_http(host: Any, clients: int, turns: int) -> None:
    """Start ``turns`` turns through ``host``, then ``clients`` SSE clients follow them there."""
    import httpx
    from httpx_sse import aconnect_sse

    from bench.bench_devhost import ClientResult, _read, run_round

    limits = httpx.Limits(max_connections=clients + 20, max_keepalive_connections=clients + 20)
    async with httpx.AsyncClient(timeout=httpx.Timeout(180, connect=60), limits=limits) as client:
        api = host.api
        agent = (await client.get(f"{api}/health")).json()["agents"][0]["name"]
        started: list[tuple[str, str]] = []
        for index in range(turns):
            response = await client.post(f"{api}/agents/{agent}/run", json={"message": f"turn {index}: Bergen"})
            response.raise_for_status()
            started.append((response.json()["session_id"], response.json()["correlation_id"]))

        async def first_chunk(session_id: str, correlation_id: str) -> None:
            url = f"{api}/agent/stream/{session_id}"
            params = {"correlation_id": correlation_id}
            async with aconnect_sse(client, "GET", url, params=params) as source:
                async for sse in source.aiter_sse():
                    if sse.event == "message":
                        return

        # The clients join turns that stream already: the first event times this host's answer,
        # not the durable runtime starting the agent.
        await asyncio.gather(*(first_chunk(*turn) for turn in started))

        async def one(index: int) -> ClientResult:
            # First event: from this client's own request (it joins a running turn, so the
            # catch-up answers at once); between events: the live ones that follow.
            session_id, correlation_id = started[index % turns]
            result = ClientResult(started=time.perf_counter())
            url = f"{api}/agent/stream/{session_id}"
            await _read(aconnect_sse(client, "GET", url, params={"correlation_id": correlation_id}), result)
            return result

        async def all_clients() -> list[ClientResult]:
            return list(await asyncio.gather(*(one(i) for i in range(clients))))

        where = "run there" if host.info["worker"] else "run by another host"
        name = f"HTTP: {clients} SSE clients on one local host following {turns} turns {where} (GET /agent/stream)"
        await run_round(name, host, all_clients)


async def _idle_costs(vb: ModuleType, server: ValkeyProcess, arguments: argparse.Namespace) -> None:
    print(await idle_cost(vb, server, arguments.idle_readers, arguments.idle_seconds), flush=True)
    cluster = ValkeyCluster().start()
    try:
        print(await idle_cost(vb, cluster, arguments.idle_readers, arguments.idle_seconds), flush=True)
    finally:
        cluster.stop()


async def main(arguments: argparse.Namespace) -> None:
    if arguments.app_heap:
        # The heap of a host that runs the app: the Functions worker's and the app's imports.
        importlib.import_module("function_app")
        if not arguments.tune_collector:
            gc.set_threshold(*_PYTHON_THRESHOLDS)  # the app's own tuning undone: Python's collector
            gc.unfreeze()
    if arguments.tune_collector:
        # What the app does once imported (valkey_buffer.tune_collector): applies to both revisions alike.
        importlib.import_module("valkey_buffer").tune_collector()
    elif arguments.gc_threshold:
        # What the collector costs grows with the objects in flight (thousands of turns and readers):
        # a larger first generation makes collections rarer. Applies to both revisions alike.
        gc.set_threshold(arguments.gc_threshold, *gc.get_threshold()[1:])
    print(f"gc thresholds {gc.get_threshold()}, frozen objects {gc.get_freeze_count()}", flush=True)
    if not arguments.http_only:
        server = ValkeyProcess().start()
        try:
            with tempfile.TemporaryDirectory(prefix="bench-baseline-") as folder:
                baseline = f"baseline {arguments.baseline}"
                implementations = {
                    baseline: load_baseline(arguments.baseline, Path(folder))[0],
                    "this checkout": importlib.import_module("valkey_buffer"),
                }
                elsewhere = None
                if arguments.writers_elsewhere:
                    options = ("--app-heap",) * arguments.app_heap + ("--tune-collector",) * arguments.tune_collector
                    elsewhere = {
                        baseline: WritersElsewhere("valkey_buffer_baseline", folder, options),
                        "this checkout": WritersElsewhere("valkey_buffer", "", options),
                    }
                await scale_curve(implementations, server, arguments.n, arguments.seconds, elsewhere)
                if not arguments.no_write_path:
                    await _write_paths(*implementations.values(), server, rounds=arguments.write_rounds)
                if not arguments.no_idle:
                    await _idle_costs(implementations["this checkout"], server, arguments)
        finally:
            server.stop()
    if arguments.http or arguments.http_only:
        with contextlib.suppress(KeyboardInterrupt):
            await http_clients(
                arguments.http_clients,
                arguments.chunk_delay_ms,
                arguments.turns_shared,
                turns_elsewhere=arguments.writers_elsewhere,
            )


def _arguments(argv: Any = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare with")
    parser.add_argument("--n", type=int, nargs="+", default=[100, 300, 1000, 2000], help="concurrent turns")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long each turn streams")
    parser.add_argument("--write-rounds", type=int, default=10, help="alternating rounds of the write path")
    parser.add_argument("--no-write-path", action="store_true", help="skip the write path of one turn")
    parser.add_argument("--no-idle", action="store_true", help="skip what idle streams cost")
    parser.add_argument("--idle-readers", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--gc-threshold", type=int, default=0, help="the collector's first threshold (0: Python's)")
    parser.add_argument("--tune-collector", action="store_true", help="valkey_buffer.tune_collector(), as the app")
    parser.add_argument("--app-heap", action="store_true", help="import function_app first (a host's heap)")
    parser.add_argument(
        "--writers-elsewhere", action="store_true", help="the writers in a process of their own (the durable instances)"
    )
    parser.add_argument("--http", action="store_true", help="also 1,000 SSE clients on one local host")
    parser.add_argument("--http-only", action="store_true", help="only the SSE clients on one local host")
    parser.add_argument("--http-clients", type=int, default=1000)
    parser.add_argument("--turns-shared", type=int, default=10, help="turns the SSE clients follow")
    parser.add_argument("--chunk-delay-ms", type=int, default=200, help="the scripted model's pace (HTTP)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(_arguments()))
