"""The AG-UI route through the app: real entity functions, the scripted model, Valkey, raw SSE.

Events are read with a real SSE parser and checked against the protocol library's models; the
official JavaScript client runs against devhost in tests/agui.
"""

from __future__ import annotations

import json
import uuid

import httpx
from ag_ui.core import Event
from httpx_sse import ServerSentEvent, aconnect_sse
from pydantic import TypeAdapter

from tests.app.app_harness import DurableClientDouble
from travel_agents import FAIL_MARKER

AGENT = "TravelAgent"
URL = f"/api/agents/{AGENT}/ag-ui"
EVENT = TypeAdapter(Event)


def _input(message: str, *, thread: str | None = None, run: str | None = None, **extra: object) -> dict:
    return {
        "threadId": thread or uuid.uuid4().hex,
        "runId": run or uuid.uuid4().hex,
        "messages": [{"id": uuid.uuid4().hex, "role": "user", "content": message}],
        **extra,
    }


async def _events(
    http: httpx.AsyncClient, body: dict, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[ServerSentEvent]]:
    async with aconnect_sse(http, "POST", URL, json=body, headers=headers or {}) as source:
        return source.response, [event async for event in source.aiter_sse()]


def _types(events: list[ServerSentEvent]) -> list[str]:
    return [json.loads(event.data)["type"] for event in events]


def _text(events: list[ServerSentEvent]) -> str:
    datas = [json.loads(event.data) for event in events]
    return "".join(data["delta"] for data in datas if data["type"] == "TEXT_MESSAGE_CONTENT")


async def _history(http: httpx.AsyncClient, durable: DurableClientDouble, session_id: str) -> dict:
    await durable.wait_idle()
    response = await http.get(f"/api/agents/{AGENT}/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_run_streams_the_tool_call_and_the_committed_answer_as_ag_ui_events(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    body = _input("Three days in Lisbon in May?")
    response, events = await _events(http, body)

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    for event in events:
        EVENT.validate_json(event.data)  # every event parses as an ag-ui-protocol model
        assert event.id, f"an event without an id: {event.data}"
    types = _types(events)
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert types.index("TOOL_CALL_START") < types.index("TOOL_CALL_RESULT") < types.index("TEXT_MESSAGE_START")
    started = json.loads(events[0].data)
    assert (started["threadId"], started["runId"]) == (body["threadId"], body["runId"])
    (turn,) = (await _history(http, durable, body["threadId"]))["turns"]
    assert turn["correlation_id"] == body["runId"]
    assert _text(events) == turn["response"]


async def test_a_second_run_continues_the_thread(http: httpx.AsyncClient, durable: DurableClientDouble) -> None:
    first = _input("Lisbon in May?")
    await _events(http, first)
    second = _input("And what should I pack?", thread=first["threadId"])
    _, events = await _events(http, second)

    assert _types(events)[-1] == "RUN_FINISHED"
    history = await _history(http, durable, first["threadId"])
    assert [turn["correlation_id"] for turn in history["turns"]] == [first["runId"], second["runId"]]


async def test_a_failing_turn_ends_with_run_error(http: httpx.AsyncClient) -> None:
    _, events = await _events(http, _input(f"Break {FAIL_MARKER}"))

    assert _types(events)[-1] == "RUN_ERROR"
    assert "ScriptedModelError" in json.loads(events[-1].data)["message"]


async def test_a_cut_run_re_attaches_after_last_event_id_with_the_text_once_and_no_second_turn(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    body = _input("Three days in Lisbon in May?")
    _, whole = await _events(http, body)
    seen = whole[:8]  # the connection dropped after a few events

    _, rest = await _events(http, body, {"Last-Event-ID": seen[-1].id or ""})

    assert _types(rest)[0] == "RUN_STARTED" and _types(rest)[-1] == "RUN_FINISHED"
    assert _text(seen) + _text(rest) == _text(whole)
    assert _types(seen + rest).count("TOOL_CALL_RESULT") == 1
    history = await _history(http, durable, body["threadId"])
    assert len(history["turns"]) == 1, "re-attaching started another turn"


async def test_a_post_naming_an_accepted_run_without_last_event_id_replays_it_from_its_start(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    body = _input("Oslo in January?")
    _, whole = await _events(http, body)
    _, again = await _events(http, body)

    assert _types(again) == _types(whole) and _text(again) == _text(whole)
    assert len((await _history(http, durable, body["threadId"]))["turns"]) == 1


async def test_bad_input_gets_a_400_with_a_reason_and_an_unknown_agent_a_404(http: httpx.AsyncClient) -> None:
    cases = {
        "not json": (b"hello", "Invalid JSON"),
        "not a RunAgentInput": (json.dumps({"message": "hi"}).encode(), "RunAgentInput"),
        "no user message": (
            json.dumps({**_input("x"), "messages": [{"id": "a", "role": "assistant", "content": "hi"}]}).encode(),
            "no user message",
        ),
        "bad thread id": (json.dumps(_input("x", thread="a b")).encode(), "threadId"),
        "bad run id": (json.dumps({**_input("x"), "runId": ""}).encode(), "runId"),
        "frontend tools": (
            json.dumps(_input("x", tools=[{"name": "t", "description": "d", "parameters": {}}])).encode(),
            "not supported",
        ),
    }
    for name, (content, reason) in cases.items():
        response = await http.post(URL, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (name, response.text)
        assert reason in response.json()["error"], (name, response.text)
    unknown = await http.post("/api/agents/Nobody/ag-ui", json=_input("x"))
    assert unknown.status_code == 404
