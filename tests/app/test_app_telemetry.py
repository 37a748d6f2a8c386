"""The trace crosses the durable hop the way Azure runs it too: the route's signal input becomes the
JSON the durable extension hands the app's entity function, which runs the agent on another thread."""

from __future__ import annotations

import httpx

from tests.app.app_harness import DurableClientDouble
from tests.otel_capture import OtelCapture, parent_id

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


async def test_a_turn_run_by_the_entity_function_joins_the_trace_of_the_request_that_started_it(
    http: httpx.AsyncClient, durable: DurableClientDouble, otel: OtelCapture
) -> None:
    response = await http.post(
        "/api/agents/TravelAgent/run", json={"message": "A weekend in Porto?"}, headers={"traceparent": TRACEPARENT}
    )
    assert response.status_code == 202
    correlation_id = response.json()["correlation_id"]
    await durable.wait_idle()

    route = await otel.wait_for_span(lambda s: s.name == "POST /api/agents/{name}/run", what="the route span")
    invoke = await otel.wait_for_span(lambda s: s.name == "invoke_agent TravelAgent", what="the invoke_agent span")
    write = await otel.wait_for_span(
        lambda s: s.name == "agent_stream.write" and s.attributes.get("agent_stream.correlation_id") == correlation_id,
        what="the stream span",
    )
    assert {f"{span.context.trace_id:032x}" for span in (route, invoke, write)} == {TRACE_ID}
    assert parent_id(invoke) == parent_id(write) == route.context.span_id
    assert route.attributes["agent_stream.correlation_id"] == correlation_id
