"""The AG-UI route, measured: time to first text event against the SSE route, and the translation's cost.

Run: .venv/bin/python -m bench.bench_agui [--turns 50] [--events 20000]

- Time to first event: a local host (``python -m devhost``) runs turns started with ``/run``; each
  is followed twice at once, by the SSE route (``GET /api/agent/stream/...``, first ``message``) and
  by the AG-UI route (``POST /api/agents/{name}/ag-ui`` naming the turn, which re-attaches: first
  ``TEXT_MESSAGE_CONTENT``); which asks first alternates. p50/p99 of each and the ratio of the p50s.
- Translation: ``AguiTranslator.sse`` (events built and serialised with ``ag-ui-protocol``) per
  stream entry, against the SSE routes' ``chunk_to_sse``, in µs per entry (p50/p99) over a turn of
  text entries with a tool call.

Figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from bench._stats import pct
from http_api._agui_events import AguiTranslator
from http_api._sse import chunk_to_sse
from tests.e2e.devhost_process import DevHostProcess
from valkey_buffer import StreamChunk


async def _first_sse(client: httpx.AsyncClient, url: str, params: dict[str, str]) -> float:
    started = time.perf_counter()
    async with aconnect_sse(client, "GET", url, params=params) as source:
        async for event in source.aiter_sse():
            if event.event == "message" and event.data:
                return time.perf_counter() - started
    raise RuntimeError("no message on the SSE route")


async def _first_agui(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> float:
    started = time.perf_counter()
    async with aconnect_sse(client, "POST", url, json=body) as source:
        async for event in source.aiter_sse():
            if json.loads(event.data)["type"] == "TEXT_MESSAGE_CONTENT":
                return time.perf_counter() - started
    raise RuntimeError("no TEXT_MESSAGE_CONTENT on the AG-UI route")


async def first_events(turns: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-agui-") as folder:
        host = DevHostProcess.start(Path(folder), env={"SCRIPTED_CHUNK_DELAY_MS": "20"}, name="bench-agui")
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                agent = (await client.get(f"{host.api}/health")).json()["agents"][0]["name"]
                sse: list[float] = []
                agui: list[float] = []
                for turn in range(turns):
                    started = (await client.post(f"{host.api}/agents/{agent}/run", json={"message": "Go"})).json()
                    session_id, correlation_id = started["session_id"], started["correlation_id"]
                    by_sse = _first_sse(
                        client, f"{host.api}/agent/stream/{session_id}", {"correlation_id": correlation_id}
                    )
                    body = {
                        "threadId": session_id,
                        "runId": correlation_id,
                        "messages": [{"id": "u", "role": "user", "content": "Go"}],
                    }
                    by_agui = _first_agui(client, f"{host.api}/agents/{agent}/ag-ui", body)
                    if turn % 2:
                        sse_time, agui_time = await asyncio.gather(by_sse, by_agui)
                    else:
                        agui_time, sse_time = await asyncio.gather(by_agui, by_sse)
                    sse.append(sse_time)
                    agui.append(agui_time)
                return sse, agui
        finally:
            host.stop()


def _turn_chunks() -> list[StreamChunk]:
    chunks = [
        StreamChunk("1-0", kind="tool_call", tool_call_id="c", tool_name="get_destination_weather",
                    tool_arguments='{"city": "Lisbon", "month": "May"}'),
        StreamChunk("1-1", kind="tool_result", tool_call_id="c", tool_result="Lisbon in May: sunny, 20 °C."),
    ]  # fmt: skip
    chunks += [StreamChunk(f"1-{i}", text="a dozen chars", sequence=i, correlation_id="r") for i in range(2, 40)]
    chunks.append(StreamChunk("1-40", kind="done"))
    return chunks


def translation_costs(events: int) -> tuple[list[float], list[float]]:
    chunks = _turn_chunks()
    agui: list[float] = []
    sse: list[float] = []
    while len(agui) < events:
        translator = AguiTranslator("s", "r")
        previous = "0"
        for chunk in chunks:
            started = time.perf_counter()
            _, previous = translator.sse(chunk, previous)
            agui.append((time.perf_counter() - started) * 1e6)
            started = time.perf_counter()
            chunk_to_sse(chunk)
            sse.append((time.perf_counter() - started) * 1e6)
    return agui, sse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    agui_cost, sse_cost = translation_costs(args.events)
    print(
        f"translation per entry: AG-UI p50 {pct(agui_cost, 0.5):.1f} µs p99 {pct(agui_cost, 0.99):.1f} µs; "
        f"SSE framing p50 {pct(sse_cost, 0.5):.1f} µs p99 {pct(sse_cost, 0.99):.1f} µs "
        f"(x{pct(agui_cost, 0.5) / pct(sse_cost, 0.5):.1f})"
    )
    sse, agui = asyncio.run(first_events(args.turns))
    print(
        f"time to first text event over {args.turns} turns: SSE route p50 {pct(sse, 0.5) * 1000:.1f} ms "
        f"p99 {pct(sse, 0.99) * 1000:.1f} ms; AG-UI route p50 {pct(agui, 0.5) * 1000:.1f} ms "
        f"p99 {pct(agui, 0.99) * 1000:.1f} ms (AG-UI/SSE p50 x{pct(agui, 0.5) / pct(sse, 0.5):.2f})"
    )


if __name__ == "__main__":
    main()
