"""Tool activity through the routes: the travel agent's weather call on SSE, in plain text and in the history.

The Function App's real callback, the real durable entity functions, the scripted model (which calls
``get_destination_weather`` through the same function-call contents a real model streams) and Valkey.
"""

from __future__ import annotations

import json

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.app.app_harness import DurableClientDouble
from tests.shown_text import sse_text

AGENT = "TravelAgent"
QUESTION = "Three days in Lisbon in May?"
CALL = {"name": "get_destination_weather", "arguments": {"city": "Lisbon", "month": "May"}}
RESULT = "Lisbon in May: sunny, 20 °C."


async def _sse(http: httpx.AsyncClient, method: str, url: str, **kwargs: object) -> list[ServerSentEvent]:
    async with aconnect_sse(http, method, url, **kwargs) as source:  # type: ignore[arg-type]
        return [event async for event in source.aiter_sse()]


async def _committed(http: httpx.AsyncClient, durable: DurableClientDouble, session_id: str) -> dict:
    await durable.wait_idle()
    response = await http.get(f"/api/agents/{AGENT}/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_sse_stream_sends_the_tool_call_and_its_result_as_events_of_their_own(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    events = await _sse(http, "POST", f"/api/agents/{AGENT}/stream", json={"message": QUESTION})
    start = json.loads(events[0].data)

    kinds = [event.event for event in events]
    assert kinds.count("tool_call") == 1 and kinds.count("tool_result") == 1
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("message"), kinds
    call = json.loads(events[kinds.index("tool_call")].data)
    result = json.loads(events[kinds.index("tool_result")].data)
    assert {key: call[key] for key in ("name", "arguments")} == CALL
    assert result == {"call_id": call["call_id"], "result": RESULT, "truncated": False}
    assert all(event.id for event in events[1:]), "tool events carry their entry id for resuming"
    history = await _committed(http, durable, start["session_id"])
    (turn,) = history["turns"]
    assert sse_text(events) == turn["response"], "tool events add nothing to the text"
    assert RESULT in turn["response"]
    assert turn["tool_calls"] == [{"call_id": call["call_id"], **CALL, "result": RESULT}]


async def test_resuming_after_the_tool_call_sends_its_result_once_and_not_the_call(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    first = await _sse(http, "POST", f"/api/agents/{AGENT}/stream", json={"message": QUESTION})
    start = json.loads(first[0].data)
    kinds = [event.event for event in first]
    cut = kinds.index("tool_call")

    rest = await _sse(
        http,
        "GET",
        f"/api/agent/stream/{start['session_id']}",
        params={"correlation_id": start["correlation_id"]},
        headers={"Last-Event-ID": first[cut].id},
    )

    assert [event.id for event in first[1 : cut + 1] + rest] == [event.id for event in first[1:]]
    assert [event.event for event in rest].count("tool_result") == 1
    assert "tool_call" not in [event.event for event in rest]


async def test_a_plain_text_stream_shows_one_line_per_tool_call(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    response = await http.post(f"/api/agents/{AGENT}/stream", content=QUESTION, headers={"Accept": "text/plain"})

    assert response.status_code == 200
    history = await _committed(http, durable, response.headers["x-session-id"])
    line = f'[tool] get_destination_weather {{"city": "Lisbon", "month": "May"}} -> {RESULT}\n'
    assert response.text == line + history["turns"][0]["response"]


async def test_the_history_of_a_turn_without_tools_lists_no_tool_calls(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    events = await _sse(http, "POST", f"/api/agents/{AGENT}/stream", json={"message": "Surprise me"})
    assert not {"tool_call", "tool_result"} & {event.event for event in events}
    history = await _committed(http, durable, json.loads(events[0].data)["session_id"])
    assert history["turns"][0]["tool_calls"] == []
