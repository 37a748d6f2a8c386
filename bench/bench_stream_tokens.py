"""Stream tokens, measured: what checking one costs, and the anonymous route against the function-key route.

Run: .venv/bin/python -m bench.bench_stream_tokens [--checks 20000] [--turns 50]

- Token check: ``StreamTokens.check`` on a valid token and on tampered ones, µs per call (p50/p99),
  against a valkey-server of its own (the signing key is read once, then cached).
- Time to first event: a local host (``python -m devhost``) runs turns; each is followed twice at
  once, by the function-key route (``GET /api/agent/stream/...``) and by its ``stream_url``
  (``GET /api/streams/...?token=``): the time from the request to the first ``message`` event.

Figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from bench._stats import pct
from http_api import StreamTokenError, StreamTokens
from tests.e2e.devhost_process import DevHostProcess
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer


async def check_costs(checks: int) -> dict[str, list[float]]:
    server = ValkeyProcess().start()
    buffer = ValkeyStreamBuffer(ValkeySettings(host=server.host, port=server.port))
    try:
        tokens = StreamTokens(buffer)
        good = await tokens.issue("session-1", "turn-1")
        body, signature = good.split(".")
        cases = {"valid": good, "tampered signature": f"{body}.{signature[::-1]}", "garbage": "x" * len(good)}
        timings: dict[str, list[float]] = {name: [] for name in cases}
        for name, token in cases.items():
            for _ in range(checks):
                started = time.perf_counter()
                with contextlib.suppress(StreamTokenError):
                    await tokens.check(token)
                timings[name].append((time.perf_counter() - started) * 1e6)
        return timings
    finally:
        await buffer.aclose()
        server.stop()


async def _first_event(client: httpx.AsyncClient, url: str, **kwargs: object) -> float:
    started = time.perf_counter()
    async with aconnect_sse(client, "GET", url, **kwargs) as source:  # type: ignore[arg-type]
        async for event in source.aiter_sse():
            if event.event == "message" and event.data:
                return time.perf_counter() - started
    raise RuntimeError(f"no message from {url}")


async def first_events(turns: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as folder:
        host = DevHostProcess.start(Path(folder), env={"SCRIPTED_CHUNK_DELAY_MS": "20"}, name="bench-tokens")
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                agent = (await client.get(f"{host.api}/health")).json()["agents"][0]["name"]
                keyed: list[float] = []
                anonymous: list[float] = []
                for turn in range(turns):
                    started = (await client.post(f"{host.api}/agents/{agent}/run", json={"message": "Go"})).json()
                    session_id, correlation_id = started["session_id"], started["correlation_id"]
                    by_key = _first_event(
                        client, f"{host.api}/agent/stream/{session_id}", params={"correlation_id": correlation_id}
                    )
                    by_token = _first_event(client, f"{host.url}{started['stream_url']}")
                    # Both wait for the same first chunk; which asks first alternates, so neither gains.
                    if turn % 2:
                        key_time, token_time = await asyncio.gather(by_key, by_token)
                    else:
                        token_time, key_time = await asyncio.gather(by_token, by_key)
                    keyed.append(key_time)
                    anonymous.append(token_time)
                return keyed, anonymous
        finally:
            host.stop()


async def main(checks: int, turns: int) -> None:
    for name, values in (await check_costs(checks)).items():
        print(f"token check, {name}: p50 {pct(values, 0.5):.1f} µs p99 {pct(values, 0.99):.1f} µs (n={len(values)})")
    keyed, anonymous = await first_events(turns)
    print(
        f"time to first event (n={turns}): function-key route p50 {pct(keyed, 0.5) * 1000:.1f} ms "
        f"p99 {pct(keyed, 0.99) * 1000:.1f} ms | stream_url route p50 {pct(anonymous, 0.5) * 1000:.1f} ms "
        f"p99 {pct(anonymous, 0.99) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--turns", type=int, default=50)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.checks, arguments.turns))
