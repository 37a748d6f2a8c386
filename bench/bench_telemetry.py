"""What the instrumentation costs, side by side in one run: the write path and SSE delivery of this checkout
(instrumented) against a baseline revision (not instrumented), first with no OpenTelemetry SDK, then with it.

Run: .venv/bin/python -m bench.bench_telemetry [--baseline REV] [--rounds N]   (default: 86df4e9, before it)

The baseline's ``valkey_buffer``, ``http_api`` and ``travel_agents`` are taken from git (``git archive``)
and imported under other names (``*_baseline``, their import lines rewritten), so both run in one
process against one valkey-server, alternating round after round so that the machine's ups and downs
touch both alike. Two phases:

1. no SDK: only the OpenTelemetry API is there (what runs when nothing configures telemetry);
2. SDK: a TracerProvider (BatchSpanProcessor into an in-memory exporter) and a MeterProvider (in-memory
   reader) are installed, so every span and metric of this checkout is produced and kept. The
   baseline emits nothing either way: it is the control for the machine's drift between the phases.

Measured: the write path (chunks/s of one 5,000-chunk turn through ``write_chunk``) and SSE delivery
(10 clients follow one 300-chunk turn, a chunk every 10 ms, over HTTP through the real resume route; the time from
``write_chunk`` to the event's arrival at the client, p50 and p99 over all events), each also as this
process's CPU time per chunk or event. On a shared machine those move by several percent from run to
run, so the instrumentation's own calls are also timed alone, per unit of work, in each phase (the
fastest of several repeats): what they add to a chunk, a batch, an entry handed to a response, a turn.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from bench._baseline import load_baseline
from bench._stats import pct
from tests.valkey_servers import ValkeyProcess

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "86df4e9"
_PACKAGES = ("valkey_buffer", "http_api", "travel_agents")

WRITE_CHUNKS = 5_000
SSE_CLIENTS = 10
SSE_CHUNKS = 300
SSE_PACE_SECONDS = 0.01


def install_sdk() -> tuple[Any, Any, Any]:
    """The SDK with in-memory exporters, for the rest of the process."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return tracer_provider, spans, reader


async def write_path(buffer: Any) -> tuple[float, float]:
    """One turn through write_chunk: chunks/s, and this process's CPU seconds per chunk (all its threads,
    GLIDE's and the SDK's included: unlike wall time, barely moved by other processes on the machine)."""
    session = uuid.uuid4().hex
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(WRITE_CHUNKS):
        await buffer.write_chunk(session, f"token{i} ", correlation_id="t", agent="bench")
    await buffer.write_completion(session, correlation_id="t", agent="bench")
    return WRITE_CHUNKS / (time.perf_counter() - started), (time.process_time() - cpu) / WRITE_CHUNKS


class _NoEntity:
    """The durable client of a resume route whose turns are never found in an entity's state."""

    async def read_entity_state(self, entity_id: Any) -> Any:
        from azure.durable_functions.models.EntityStateResponse import EntityStateResponse

        return EntityStateResponse(False)


async def sse_delivery(buffer: Any, http_api: ModuleType) -> tuple[list[float], float]:
    """Seconds from write_chunk to the SSE event's arrival for every event every client received, and
    this process's CPU seconds per event received (server and clients alike)."""
    api = http_api.AgentHttpApi(
        buffer=buffer, agent_names=["bench"], stream_settings=http_api.StreamSettings(heartbeat_seconds=5)
    )
    client = _NoEntity()

    async def resume(request: Any) -> Any:
        return await api.resume_stream(request, client)

    app = Starlette(routes=[Route("/api/agent/stream/{session_id}", resume)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # it could not start: say why
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    session = uuid.uuid4().hex
    latencies: list[float] = []

    async def follow(http: httpx.AsyncClient) -> None:
        url = f"http://127.0.0.1:{port}/api/agent/stream/{session}"
        async with http.stream("GET", url, params={"correlation_id": "t"}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and ":" in line[6:]:
                    latencies.append(time.perf_counter() - float(line[6:].split(":", 1)[1]))
                elif line.startswith("event: done"):
                    return

    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=SSE_CLIENTS + 5)) as http:
            followers = [asyncio.create_task(follow(http)) for _ in range(SSE_CLIENTS)]
            await asyncio.sleep(1.0)  # every client connected and following
            cpu = time.process_time()
            for i in range(SSE_CHUNKS):
                await buffer.write_chunk(session, f"{i}:{time.perf_counter()!r}", correlation_id="t", agent="bench")
                await asyncio.sleep(SSE_PACE_SECONDS)
            await buffer.write_completion(session, correlation_id="t", agent="bench")
            await asyncio.wait_for(asyncio.gather(*followers), 60)
            cpu = time.process_time() - cpu
    finally:
        server.should_exit = True
        await serving
    return latencies, cpu / len(latencies)


async def _phase(
    implementations: dict[str, tuple[ModuleType, ModuleType]], server: ValkeyProcess, rounds: int
) -> dict[str, dict[str, float]]:
    """Medians over ``rounds`` back-to-back pairs (the order flips every round), and the median of the
    pairs' ratios: a burst of load on the machine touches both members of a pair alike."""
    buffers = {
        name: vb.ValkeyStreamBuffer(vb.ValkeySettings(host=server.host, port=server.port, stream_maxlen=None))
        for name, (vb, _) in implementations.items()
    }
    runs: dict[str, dict[str, list[float]]] = {
        name: {"write": [], "write_cpu": [], "p50": [], "p99": [], "sse_cpu": []} for name in implementations
    }
    try:
        for buffer in buffers.values():  # warm-up: connections, caches
            session = uuid.uuid4().hex
            for i in range(500):
                await buffer.write_chunk(session, f"warm-up{i} ", correlation_id="t")
            await buffer.write_completion(session, correlation_id="t")
        for round_number in range(rounds):
            order = list(implementations) if round_number % 2 == 0 else list(reversed(implementations))
            for name in order:
                speed, cpu = await write_path(buffers[name])
                runs[name]["write"].append(speed)
                runs[name]["write_cpu"].append(cpu)
            for name in order:
                latencies, cpu = await sse_delivery(buffers[name], implementations[name][1])
                runs[name]["p50"].append(pct(latencies, 0.5))
                runs[name]["p99"].append(pct(latencies, 0.99))
                runs[name]["sse_cpu"].append(cpu)
    finally:
        for buffer in buffers.values():
            await buffer.aclose()
    base, ours = runs["baseline"], runs["checkout"]
    figures = {name: {key: statistics.median(values) for key, values in run.items()} for name, run in runs.items()}
    # Cost of the checkout against the baseline, pair by pair (positive: slower).
    figures["cost"] = {
        "write": statistics.median(b / o - 1 for b, o in zip(base["write"], ours["write"], strict=True)),
        "write_cpu": statistics.median(o / b - 1 for b, o in zip(base["write_cpu"], ours["write_cpu"], strict=True)),
        "p99": statistics.median(o / b - 1 for b, o in zip(base["p99"], ours["p99"], strict=True)),
        "sse_cpu": statistics.median(o / b - 1 for b, o in zip(base["sse_cpu"], ours["sse_cpu"], strict=True)),
    }
    return figures


def instrumentation_calls() -> dict[str, float]:
    """Microseconds per call of what the instrumentation adds, timed alone (the fastest of 5 repeats)."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    from valkey_buffer._telemetry import ReaderTelemetry, TurnTelemetry

    def each(action: Any, number: int = 20_000) -> float:
        return min(timeit.repeat(action, number=number, repeat=5)) / number * 1e6

    turn = TurnTelemetry(session_id="s", correlation_id="c", agent="a", parent=None, accepted_at_ms=None)
    for _ in range(40):
        turn.batch_written(1, 0.001)  # past the batch events' cap, as in a long answer
    reader = ReaderTelemetry(session_id="s", correlation_id="c", resumed=False, parent=None, turn_trace=None)
    reader.agent_known("a")
    route_context = trace.set_span_in_context(trace.get_tracer("bench").start_span("route"))

    def sampled_entry() -> None:
        reader._next_lag_sample = 0.0
        reader.delivered(1)

    def body_step() -> None:
        otel_context.detach(otel_context.attach(route_context))

    def whole_turn() -> None:
        t = TurnTelemetry(session_id="s", correlation_id="c", agent="a", parent=None, accepted_at_ms=1)
        t.batch_written(1, 0.001)
        t.ended("done", written=True)

    def whole_reader() -> None:
        r = ReaderTelemetry(session_id="s", correlation_id="c", resumed=False, parent=None, turn_trace=None)
        r.started()
        r.ended("done")

    return {
        "batch written (per batch)": each(lambda: turn.batch_written(1, 0.001)),
        "entry handed on (per entry)": each(lambda: reader.delivered(1)),
        "  of which sampled (<= 1 per 50 ms)": each(sampled_entry),
        "response body step (per event)": each(body_step),
        "turn span + first batch + end": each(whole_turn, 2_000),
        "reader span, start and end": each(whole_reader, 2_000),
    }


async def main(baseline_revision: str, rounds: int) -> None:
    server = ValkeyProcess().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as folder:
            implementations = {
                "baseline": tuple(load_baseline(baseline_revision, Path(folder), _PACKAGES)),
                "checkout": (importlib.import_module("valkey_buffer"), importlib.import_module("http_api")),
            }
            without = await _phase(implementations, server, rounds)
            calls_without = instrumentation_calls()
            tracer_provider, spans, reader = install_sdk()
            with_sdk = await _phase(implementations, server, rounds)
            tracer_provider.force_flush()
            span_count = len(spans.get_finished_spans())
            data = reader.get_metrics_data()
            calls_with = instrumentation_calls()
            metric_names = sorted(
                {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
            )
    finally:
        server.stop()

    print(
        f"write path: one {WRITE_CHUNKS:,}-chunk turn through write_chunk; SSE delivery: {SSE_CLIENTS} clients x "
        f"{SSE_CHUNKS} chunks (one every {SSE_PACE_SECONDS * 1000:g} ms) over HTTP through the resume route, "
        f"write_chunk to event received. Medians of {rounds} back-to-back pairs per phase.\n"
    )
    print(f"{'phase':<8}{'code':<22}{'write path':>14}{'CPU/chunk':>11}{'SSE p50':>10}{'SSE p99':>10}{'CPU/event':>11}")
    for phase, figures in (("no SDK", without), ("SDK", with_sdk)):
        for name, label in (("baseline", f"baseline {baseline_revision}"), ("checkout", "this checkout")):
            f = figures[name]
            print(
                f"{phase:<8}{label:<22}{f['write']:>9,.0f} ch/s{f['write_cpu'] * 1e6:>9.1f}us"
                f"{f['p50'] * 1000:>8.2f}ms{f['p99'] * 1000:>8.2f}ms{f['sse_cpu'] * 1e6:>9.1f}us"
            )
    print(f"\ninstrumentation cost against the baseline, median of the {rounds} pairs' ratios (positive: costlier):")
    for phase, figures in (("no SDK", without), ("SDK", with_sdk)):
        c = figures["cost"]
        print(
            f"  {phase:<7} write path: CPU/chunk {c['write_cpu']:+.1%}, chunks/s {-c['write']:+.1%} | "
            f"SSE: CPU/event {c['sse_cpu']:+.1%}, p99 {c['p99']:+.1%}"
        )
    off, on = without["cost"], with_sdk["cost"]
    print(
        f"  SDK over no SDK: write path CPU/chunk {(1 + on['write_cpu']) / (1 + off['write_cpu']) - 1:+.1%}, "
        f"SSE CPU/event {(1 + on['sse_cpu']) / (1 + off['sse_cpu']) - 1:+.1%}, "
        f"SSE p99 {(1 + on['p99']) / (1 + off['p99']) - 1:+.1%}"
    )
    print(f"\nthe instrumentation's calls alone, us per call{'no SDK':>12}{'SDK':>10}")
    for call, micros in calls_without.items():
        print(f"  {call:<43}{micros:>11.2f}{calls_with[call]:>10.2f}")
    ours = [name for name in metric_names if name.startswith("agent_stream.")]
    print(f"\nwith the SDK the runs kept {span_count} spans and recorded the valkey_buffer metrics {', '.join(ours)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision without the instrumentation")
    parser.add_argument("--rounds", type=int, default=9, help="back-to-back pairs per phase")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.baseline, arguments.rounds))
