"""One trace per turn, from the HTTP route through the durable hop to the stream, with the local host's
real pieces in this process and the SDK's in-memory span exporter."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tests.otel_capture import OtelCapture, SpanRecordingHandler, parent_id, recording_log
from tests.telemetry.conftest import AGENT

CORRELATION_ID = "agent_stream.correlation_id"
STREAM_ROUTE = "POST /api/agents/{name}/stream"
RESUME_ROUTE = "GET /api/agent/stream/{session_id}"
INCOMING_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN_ID = "00f067aa0ba902b7"


async def _stream_turn(api: str, headers: dict[str, str] | None = None) -> tuple[str, str, list[ServerSentEvent]]:
    headers = dict(headers or {})
    async with (
        httpx.AsyncClient(timeout=30) as http,
        aconnect_sse(
            http, "POST", f"{api}/agents/{AGENT}/stream", json={"message": "Three days in Lisbon?"}, headers=headers
        ) as source,
    ):
        session_id = source.response.headers["x-session-id"]
        correlation_id = source.response.headers["x-correlation-id"]
        events = [event async for event in source.aiter_sse()]
    return session_id, correlation_id, events


def _of_turn(name: str, correlation_id: str) -> Any:
    return lambda span: span.name == name and span.attributes.get(CORRELATION_ID) == correlation_id


def _only(spans: list[ReadableSpan], what: str) -> ReadableSpan:
    assert len(spans) == 1, f"expected one {what}, got {[(s.name, s.context.trace_id) for s in spans]}"
    return spans[0]


async def test_a_turn_through_post_stream_is_one_trace_from_the_route_to_the_stream(
    api: str, otel: OtelCapture
) -> None:
    _, correlation_id, events = await _stream_turn(api)
    assert events[-1].event == "done"

    route = await otel.wait_for_span(_of_turn(STREAM_ROUTE, correlation_id), what="the route span")
    write = await otel.wait_for_span(_of_turn("agent_stream.write", correlation_id), what="the stream span")
    read = await otel.wait_for_span(_of_turn("agent_stream.read", correlation_id), what="the reader span")
    await otel.wait_for_span(lambda s: s.name.startswith("invoke_agent"), what="Agent Framework's invoke_agent span")
    invoke = _only([s for s in otel.spans() if s.name.startswith("invoke_agent")], "invoke_agent span")

    # The route made the server span of a new trace; everything else of the turn is in it.
    assert route.kind == SpanKind.SERVER and route.parent is None
    trace_id = route.context.trace_id
    assert {invoke.context.trace_id, write.context.trace_id, read.context.trace_id} == {trace_id}
    # The agent ran in another worker thread, on Agent Framework's loop, after the durable hop: the
    # context crossed it in the run request and was restored around the run.
    assert invoke.name == f"invoke_agent {AGENT}" and parent_id(invoke) == route.context.span_id
    assert write.kind == SpanKind.PRODUCER and parent_id(write) == route.context.span_id
    assert read.kind == SpanKind.CONSUMER and parent_id(read) == route.context.span_id
    # One span for the turn's stream, however many chunks: the batches are its events.
    messages = sum(1 for event in events if event.event == "message")
    assert len(otel.spans("agent_stream.write")) == 1
    assert write.attributes["agent_stream.end"] == "done"
    assert write.attributes["agent_stream.entries.written"] == messages + 1  # and the done entry
    batch_events = [event for event in write.events if event.name == "batch written"]
    assert 1 <= len(batch_events) <= 32
    assert write.attributes["gen_ai.agent.name"] == AGENT
    # The route span lasts as long as the streamed response: the reader ends inside it.
    assert route.end_time >= read.end_time >= read.start_time >= route.start_time


async def test_an_incoming_traceparent_is_continued_across_the_durable_hop(api: str, otel: OtelCapture) -> None:
    traceparent = f"00-{INCOMING_TRACE_ID}-{INCOMING_SPAN_ID}-01"
    _, correlation_id, events = await _stream_turn(api, headers={"traceparent": traceparent})
    assert events[-1].event == "done"

    route = await otel.wait_for_span(_of_turn(STREAM_ROUTE, correlation_id), what="the route span")
    write = await otel.wait_for_span(_of_turn("agent_stream.write", correlation_id), what="the stream span")
    invoke = await otel.wait_for_span(lambda s: s.name.startswith("invoke_agent"), what="the invoke_agent span")

    assert route.kind == SpanKind.SERVER
    assert f"{route.context.trace_id:032x}" == INCOMING_TRACE_ID
    assert route.parent is not None and route.parent.is_remote
    assert f"{route.parent.span_id:016x}" == INCOMING_SPAN_ID
    assert f"{invoke.context.trace_id:032x}" == INCOMING_TRACE_ID
    assert f"{write.context.trace_id:032x}" == INCOMING_TRACE_ID


async def test_a_resumed_readers_span_links_to_the_turns_trace(api: str, otel: OtelCapture) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        async with aconnect_sse(
            http, "POST", f"{api}/agents/{AGENT}/stream", json={"message": "And what should I pack?"}
        ) as source:
            session_id = source.response.headers["x-session-id"]
            correlation_id = source.response.headers["x-correlation-id"]
            seen = []
            async for event in source.aiter_sse():
                if event.event == "message":
                    seen.append(event)
                if len(seen) == 3:
                    break  # the client drops the connection; the turn goes on
        async with aconnect_sse(
            http,
            "GET",
            f"{api}/agent/stream/{session_id}",
            params={"correlation_id": correlation_id},
            headers={"Last-Event-ID": seen[-1].id},
        ) as source:
            rest = [event async for event in source.aiter_sse()]
    assert rest[-1].event == "done"

    turn = await otel.wait_for_span(_of_turn(STREAM_ROUTE, correlation_id), what="the turn's route span")
    resume = await otel.wait_for_span(_of_turn(RESUME_ROUTE, correlation_id), what="the resume's route span")
    resumed_reader = await otel.wait_for_span(
        lambda s: s.name == "agent_stream.read" and s.attributes.get("agent_stream.resumed") is True,
        what="the resumed reader's span",
    )
    # The resume is a request of its own (EventSource cannot send a traceparent): a trace of its own,
    # linked to the turn's.
    assert resume.kind == SpanKind.SERVER and resume.context.trace_id != turn.context.trace_id
    assert resumed_reader.context.trace_id == resume.context.trace_id
    assert parent_id(resumed_reader) == resume.context.span_id
    assert [link.context.trace_id for link in resumed_reader.links] == [turn.context.trace_id]
    assert resumed_reader.attributes[CORRELATION_ID] == correlation_id


@pytest.fixture
def route_log() -> Iterator[SpanRecordingHandler]:
    with recording_log("http_api._turns", logging.INFO) as handler:
        yield handler


async def test_log_records_of_a_route_carry_its_trace_and_span_ids(
    api: str, otel: OtelCapture, route_log: SpanRecordingHandler
) -> None:
    _, correlation_id, _ = await _stream_turn(api)

    route = await otel.wait_for_span(_of_turn(STREAM_ROUTE, correlation_id), what="the route span")
    [(message, context)] = [(m, c) for m, c in route_log.records if correlation_id in m and "Started turn" in m]
    assert (context.trace_id, context.span_id) == (route.context.trace_id, route.context.span_id), message
