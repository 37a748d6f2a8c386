"""200 concurrent SSE clients against one local host (``python -m devhost``) streaming scripted turns.

Run: .venv/bin/python -m bench.bench_devhost [--clients 200] [--turns-shared 10] [--chunk-delay-ms 50]

Two rounds against the same host, figures printed, nothing asserted:

- own turns: every client starts its own turn with ``POST /api/agents/{name}/stream`` and reads it live;
- shared turns: a few turns are started, and all clients follow them with ``GET /api/agent/stream``
  (many readers per stream: the fan-out path).

For each: chunks delivered per second (all clients together), first-chunk latency (from the request
to the first ``message`` event), inter-chunk latency (between consecutive events of one client), the
host's resident memory (process and its embedded valkey-server) and the Valkey connections in use
(``CLIENT LIST``), both sampled while the clients stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import valkey.asyncio as valkey_py
from httpx_sse import aconnect_sse

from bench._stats import pct
from tests.e2e.devhost_process import DevHostProcess


@dataclass
class ClientResult:
    started: float
    arrivals: list[float] = field(default_factory=list)
    terminal: str | None = None
    error: str | None = None


@dataclass
class Samples:
    rss_host_kib: int = 0
    rss_valkey_kib: int = 0
    valkey_clients: int = 0


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def _sample(host: DevHostProcess, samples: Samples, stop: asyncio.Event, once: bool = False) -> None:
    valkey_host, _, valkey_port = host.info["valkey"].rpartition(":")
    client = valkey_py.Valkey(host=valkey_host, port=int(valkey_port))
    try:
        while once or not stop.is_set():
            samples.rss_host_kib = max(samples.rss_host_kib, _rss_kib(host.process.pid))
            for child in _children(host.process.pid):
                samples.rss_valkey_kib = max(samples.rss_valkey_kib, _rss_kib(child))
            # Minus this sampler's own connection.
            samples.valkey_clients = max(samples.valkey_clients, len(await client.client_list()) - 1)
            if once:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await client.aclose()


async def _read(source_cm: contextlib.AbstractAsyncContextManager, result: ClientResult) -> None:
    try:
        async with source_cm as source:
            async for sse in source.aiter_sse():
                if sse.event == "message" and sse.data:
                    result.arrivals.append(time.perf_counter())
                elif sse.event in ("done", "error"):
                    result.terminal = sse.event
                    return
    except Exception as error:
        result.error = f"{type(error).__name__}: {error}"


async def own_turns(client: httpx.AsyncClient, api: str, agent: str, clients: int) -> list[ClientResult]:
    async def one(index: int) -> ClientResult:
        result = ClientResult(started=time.perf_counter())
        body = {"message": f"bench client {index}: a weekend in Bergen"}
        await _read(aconnect_sse(client, "POST", f"{api}/agents/{agent}/stream", json=body), result)
        return result

    return await asyncio.gather(*(one(i) for i in range(clients)))


async def shared_turns(client: httpx.AsyncClient, api: str, agent: str, clients: int, turns: int) -> list[ClientResult]:
    started: list[tuple[str, str, float]] = []
    for index in range(turns):
        t0 = time.perf_counter()
        response = await client.post(f"{api}/agents/{agent}/run", json={"message": f"shared turn {index}: Tromsø"})
        response.raise_for_status()
        payload = response.json()
        started.append((payload["session_id"], payload["correlation_id"], t0))

    async def one(index: int) -> ClientResult:
        session_id, correlation_id, t0 = started[index % turns]
        result = ClientResult(started=t0)
        url = f"{api}/agent/stream/{session_id}"
        await _read(aconnect_sse(client, "GET", url, params={"correlation_id": correlation_id}), result)
        return result

    return await asyncio.gather(*(one(i) for i in range(clients)))


def report(name: str, results: list[ClientResult], elapsed: float, samples: Samples) -> None:
    chunks = sum(len(r.arrivals) for r in results)
    first = [(r.arrivals[0] - r.started) * 1000 for r in results if r.arrivals]
    gaps = [(b - a) * 1000 for r in results for a, b in zip(r.arrivals, r.arrivals[1:], strict=False)]
    done = sum(r.terminal == "done" for r in results)
    errors = [r.error for r in results if r.error]
    print(f"{name}: {len(results)} clients, {done} reached done, {len(errors)} client errors, {elapsed:.1f} s")
    print(f"  delivered          {chunks} chunks, {chunks / elapsed:,.0f} chunks/s")
    print(f"  first chunk        p50 {pct(first, 0.5):7.1f} ms   p99 {pct(first, 0.99):7.1f} ms")
    print(f"  between chunks     p50 {pct(gaps, 0.5):7.1f} ms   p99 {pct(gaps, 0.99):7.1f} ms")
    print(
        f"  host RSS (peak)    {samples.rss_host_kib / 1024:.0f} MiB devhost process, "
        f"{samples.rss_valkey_kib / 1024:.0f} MiB embedded valkey-server"
    )
    print(f"  Valkey connections {samples.valkey_clients} in use at peak (CLIENT LIST)")
    if errors:
        print(f"  first error: {errors[0]}")


async def run_round(name: str, host: DevHostProcess, clients: Callable[[], Awaitable[list[ClientResult]]]) -> None:
    samples = Samples()
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(host, samples, stop))
    started = time.perf_counter()
    results = await clients()
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    report(name, results, elapsed, samples)


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-devhost-"))
    host = DevHostProcess.start(
        workdir,
        env={"SCRIPTED_CHUNK_DELAY_MS": str(args.chunk_delay_ms)},
        args=["--max-concurrent-turns", str(args.clients)],
        name="bench",
    )
    try:
        limits = httpx.Limits(max_connections=args.clients + 20, max_keepalive_connections=args.clients + 20)
        async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=30), limits=limits) as client:
            health = (await client.get(f"{host.api}/health")).json()
            agent = health["agents"][0]["name"]
            print(
                f"devhost at {host.url}: agent {agent}, scripted model, {args.chunk_delay_ms} ms between chunks, "
                f"Valkey {host.info['valkey']} (embedded), worker up to {args.clients} turns at once"
            )
            idle = Samples()
            stopped = asyncio.Event()
            stopped.set()
            await _sample(host, idle, stopped, once=True)
            print(
                f"idle: devhost RSS {idle.rss_host_kib / 1024:.0f} MiB, {idle.valkey_clients} Valkey connections in use"
            )
            await run_round("own turns (POST /stream)", host, lambda: own_turns(client, host.api, agent, args.clients))
            await run_round(
                f"shared turns ({args.turns_shared} turns, GET /agent/stream)",
                host,
                lambda: shared_turns(client, host.api, agent, args.clients, args.turns_shared),
            )
    finally:
        host.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--turns-shared", type=int, default=10)
    parser.add_argument("--chunk-delay-ms", type=int, default=50)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
