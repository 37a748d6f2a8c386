"""The ``valkey_buffer`` meter's metrics, read with the SDK's in-memory metric reader: a turn streamed,
cut and resumed through the local host's pieces; an outage; a stream completed from the committed outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse
from opentelemetry.trace import StatusCode

from tests.buffer.helpers import MakeBuffer, context, new_id, response, update
from tests.eventually import eventually
from tests.otel_capture import OtelCapture, SpanRecordingHandler, delta, recording_log
from tests.telemetry.conftest import AGENT
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import TurnOutcome, ValkeySettings, ValkeyStreamBuffer

BY_AGENT = {"gen_ai.agent.name": AGENT}


async def _committed(http: httpx.AsyncClient, api: str, session_id: str, correlation_id: str) -> float:
    """Wait until the turn has committed; when that was seen (time.monotonic)."""
    status: dict = {}

    async def completed() -> bool:
        nonlocal status
        status = (await http.get(f"{api}/agents/{AGENT}/sessions/{session_id}/turns/{correlation_id}")).json()
        return status["status"] == "completed"

    await eventually(
        completed, timeout=15, interval=0.05, message=lambda: f"turn {correlation_id} did not commit: {status}"
    )
    return time.monotonic()


async def _readers_back_to(otel: OtelCapture, baseline: dict, active: float) -> None:
    await eventually(
        lambda: delta(baseline, otel.snapshot(), "agent_stream.readers.active").value == active,
        timeout=10,
        interval=0.05,
        message=f"readers.active did not return to {active:+g}",
    )


async def test_a_streamed_cut_and_resumed_turn_records_every_metric_with_plausible_values(
    api: str, otel: OtelCapture
) -> None:
    before = otel.snapshot()
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as http:
        async with aconnect_sse(
            http, "POST", f"{api}/agents/{AGENT}/stream", json={"message": "Three days in Lisbon?"}
        ) as source:
            session_id = source.response.headers["x-session-id"]
            correlation_id = source.response.headers["x-correlation-id"]
            live = []
            async for event in source.aiter_sse():
                if event.event == "message":
                    live.append(event)
                if len(live) == 5:
                    break
            while_reading = otel.snapshot()
        # The client is gone; the turn goes on and commits.
        committed_at = await _committed(http, api, session_id, correlation_id)
        await _readers_back_to(otel, before, 0)
        async with aconnect_sse(
            http,
            "GET",
            f"{api}/agent/stream/{session_id}",
            params={"correlation_id": correlation_id},
            headers={"Last-Event-ID": live[-1].id},
        ) as source:
            resumed = [event async for event in source.aiter_sse()]
    turn_seconds = committed_at - started
    await _readers_back_to(otel, before, 0)
    after = otel.snapshot()
    assert resumed[-1].event == "done"

    # Readers: one while the stream was open, none after the disconnect and after the resume.
    assert delta(before, while_reading, "agent_stream.readers.active").value == 1
    assert delta(before, after, "agent_stream.readers.active").value == 0
    # The resume started from Last-Event-ID after the turn had ended: all it got was replayed.
    assert delta(before, after, "agent_stream.resumes").value == 1
    assert delta(before, after, "agent_stream.replayed.entries", BY_AGENT).value == len(resumed)
    # Every entry of the turn was written: the five shown live, the rest the resume replayed.
    written = delta(before, after, "agent_stream.chunks.written", BY_AGENT).value
    assert written == len(live) + len(resumed)
    writes = delta(before, after, "agent_stream.write.duration", BY_AGENT)
    assert 1 <= writes.count <= written and 0 < writes.total / writes.count < turn_seconds
    # Time to first chunk: from the route's acceptance to the first entry in Valkey, once per turn.
    first = delta(before, after, "agent_stream.turn.time_to_first_chunk", BY_AGENT)
    assert first.count == 1 and 0 < first.total < turn_seconds
    # Delivery lag of the entries shown live (a sample: the first, then one per 50 ms), under a second here.
    lag = delta(before, after, "agent_stream.delivery.lag", BY_AGENT)
    assert lag.count >= 1 and 0 <= lag.total / lag.count < 1
    # Nothing was lost, nothing needed the committed outcome.
    assert delta(before, after, "agent_stream.entries.dropped").value == 0
    assert delta(before, after, "agent_stream.reconciliations").value == 0


@pytest.fixture
def buffer_log() -> Iterator[SpanRecordingHandler]:
    with recording_log("valkey_buffer") as handler:
        yield handler


async def test_an_outage_counts_dropped_entries_and_failed_round_trips(
    otel: OtelCapture, buffer_log: SpanRecordingHandler, make_buffer: MakeBuffer
) -> None:
    settings = ValkeySettings(
        host="127.0.0.1", port=ValkeyProcess().port, request_timeout_ms=200, stream_ttl_seconds=1
    )  # nobody listens; the turn's end is given up after the stream's 1 s life
    buffer = make_buffer(settings, write_retry_seconds=0.3)
    session = new_id()
    before = otel.snapshot()
    buffer.begin_turn(session, "t", agent="travel", accepted_at_ms=int(time.time() * 1000))
    ctx = context(session, "t")
    for piece in ["a", "b", "c"]:
        await buffer.on_streaming_response_update(update(piece), ctx)
    await buffer.on_agent_response(response("abc"), ctx)
    write = await otel.wait_for_span(lambda s: s.name == "agent_stream.write", within=10, what="the stream span")
    after = otel.snapshot()

    dropped = delta(before, after, "agent_stream.entries.dropped", {"gen_ai.agent.name": "travel"}).value
    assert dropped == buffer.stats.entries_dropped >= 4  # the chunks and the turn's end
    failed = delta(before, after, "agent_stream.write.duration", {"error.type": "ValkeyUnavailableError"})
    assert failed.count == buffer.stats.batch_failures >= 2
    assert delta(before, after, "agent_stream.chunks.written").value == 0
    assert delta(before, after, "agent_stream.turn.time_to_first_chunk").count == 0  # nothing reached Valkey
    assert write.status.status_code == StatusCode.ERROR
    assert write.attributes["agent_stream.end_written"] is False
    assert write.attributes["agent_stream.entries.dropped"] == dropped
    # What the writer logged about it carries the turn's span: App Insights joins the two.
    dropped_logs = [ctx for message, ctx in buffer_log.records if message.startswith("Dropped")]
    assert dropped_logs and all(
        (c.trace_id, c.span_id) == (write.context.trace_id, write.context.span_id) for c in dropped_logs
    )


async def test_a_stream_completed_from_the_committed_outcome_is_a_reconciliation(
    valkey_settings: ValkeySettings, otel: OtelCapture, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(valkey_settings)

    async def committed(correlation_id: str, agent: str | None) -> TurnOutcome:
        return TurnOutcome(status="completed", text="the committed answer")

    before = otel.snapshot()
    # The stream holds nothing of the turn (expired, or Valkey lost it): the outcome ends it.
    chunks = [c async for c in buffer.read_stream(new_id(), correlation_id="t", committed_turn=committed)]
    after = otel.snapshot()

    assert [c.kind for c in chunks] == ["replace", "done"]
    assert delta(before, after, "agent_stream.reconciliations").value == 1
    assert delta(before, after, "agent_stream.readers.active").value == 0
    reader = await otel.wait_for_span(lambda s: s.name == "agent_stream.read", what="the reader span")
    assert reader.attributes["agent_stream.end"] == "reconciled"


async def test_a_fast_streams_delivery_lag_is_sampled_not_measured_per_entry(
    valkey_settings: ValkeySettings, otel: OtelCapture, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(valkey_settings)
    session = new_id()
    before = otel.snapshot()
    reader = asyncio.create_task(_drain(buffer, session))
    await eventually(lambda: buffer.reader_stats().active == 1, message="the reader never joined the live feed")
    started = time.monotonic()
    for i in range(300):
        await buffer.write_chunk(session, f"w{i} ", correlation_id="t", agent="travel")
    await buffer.write_completion(session, correlation_id="t", agent="travel")
    delivered = await asyncio.wait_for(reader, 10)
    took = time.monotonic() - started
    after = otel.snapshot()

    lag = delta(before, after, "agent_stream.delivery.lag", {"gen_ai.agent.name": "travel"})
    assert delivered == 301
    assert 1 <= lag.count <= 1 + took / 0.05, f"{lag.count} measurements for {delivered} entries in {took:.2f} s"


async def _drain(buffer: ValkeyStreamBuffer, session: str) -> int:
    return len([chunk async for chunk in buffer.read_stream(session, correlation_id="t")])
