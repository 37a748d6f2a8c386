"""Stopping a turn: the cancel route, the agent that stops its model, the stream's end and the committed status.

The app is loaded with the scripted model at its default pace (40 ms a chunk) so that a turn can be
cancelled in its middle; its entity functions run the real durable agent entity.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from types import ModuleType

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.app.app_harness import DurableClientDouble, entity_functions, load_function_app, serve, starlette_app_for
from tests.eventually import eventually
from tests.shown_text import sse_text
from tests.valkey_servers import ValkeyProcess, free_port
from travel_agents import ScriptedChatClient, scripted_answer, split_into_chunks

AGENT = "TravelAgent"


@pytest.fixture(scope="module")
def paced_app(valkey_server: ValkeyProcess) -> ModuleType:
    return load_function_app(
        {
            "VALKEY_HOST": valkey_server.host,
            "VALKEY_PORT": str(valkey_server.port),
            "SCRIPTED_CHUNK_DELAY_MS": "40",
            "VALKEY_READ_IDLE_TIMEOUT_SECONDS": "20",
            "AZURE_OPENAI_ENDPOINT": "",
            "AZURE_OPENAI_DEPLOYMENT": "",
        },
        f"function_app_cancel_{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def model(paced_app: ModuleType) -> ScriptedChatClient:
    client = paced_app.agents[0].client
    assert isinstance(client, ScriptedChatClient)
    return client


@pytest.fixture
async def durable(paced_app: ModuleType) -> AsyncIterator[DurableClientDouble]:
    double = DurableClientDouble(entities=entity_functions(paced_app.app))
    yield double
    await double.wait_idle()


@pytest.fixture
async def http(paced_app: ModuleType, durable: DurableClientDouble) -> AsyncIterator[httpx.AsyncClient]:
    try:
        async with (
            serve(starlette_app_for(paced_app.app, durable)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            yield client
    finally:
        await paced_app.buffer.aclose()


def _turn_url(session_id: str, correlation_id: str) -> str:
    return f"/api/agents/{AGENT}/sessions/{session_id}/turns/{correlation_id}"


async def _status(http: httpx.AsyncClient, session_id: str, correlation_id: str, *, until: str) -> dict:
    """The turn's status once it is ``until``."""
    body: dict = {}

    async def reached() -> bool:
        nonlocal body
        body = (await http.get(_turn_url(session_id, correlation_id))).json()
        return body["status"] == until

    await eventually(
        reached,
        timeout=20,
        interval=0.05,
        message=lambda: f"turn {correlation_id} is {body['status']!r}, not {until!r}",
    )
    return body


async def test_cancel_mid_stream_stops_the_model_and_commits_the_partial_answer(
    http: httpx.AsyncClient, durable: DurableClientDouble, model: ScriptedChatClient
) -> None:
    events: list[tuple[float, ServerSentEvent]] = []
    ids: dict[str, str] = {}
    five_messages = asyncio.Event()

    async def stream() -> None:
        async with aconnect_sse(http, "POST", f"/api/agents/{AGENT}/stream", json={"message": "Rome"}) as source:
            ids.update(
                session=source.response.headers["x-session-id"], turn=source.response.headers["x-correlation-id"]
            )
            async for event in source.aiter_sse():
                if event.event == "start" or not (event.data or event.event != "message"):
                    continue
                events.append((time.monotonic(), event))
                if sum(e.event == "message" for _, e in events) == 5:
                    five_messages.set()

    reader = asyncio.create_task(stream())
    await asyncio.wait_for(five_messages.wait(), 10)
    asked = time.monotonic()
    cancel = await http.post(f"{_turn_url(ids['session'], ids['turn'])}/cancel")
    await asyncio.wait_for(reader, 10)
    chunks_when_stopped = model.chunks_streamed
    await asyncio.sleep(0.5)

    assert cancel.status_code == 202
    assert cancel.json() == {
        "agent": AGENT,
        "session_id": ids["session"],
        "correlation_id": ids["turn"],
        "status": "cancelling",
    }
    kinds = [event.event for _, event in events]
    assert kinds[-1] == "cancelled" and "cancelled" not in kinds[:-1]
    assert events[-1][0] - asked < 1.0, f"cancelled {events[-1][0] - asked:.2f} s after the request"
    full = split_into_chunks(scripted_answer("Rome"), model.chunk_chars)
    streamed = sse_text(event for _, event in events)
    assert 5 <= sum(k == "message" for k in kinds) < len(full), "the turn was stopped in its middle"
    # The model's stream was closed: it produced nothing more once the turn stopped.
    assert model.chunks_streamed == chunks_when_stopped
    committed = await _status(http, ids["session"], ids["turn"], until="cancelled")
    assert committed["status"] == "cancelled"
    assert committed["response"] == streamed

    # The session goes on, and the next turn's model call has the partial answer in its history.
    nxt = await http.post(f"/api/agents/{AGENT}/run", json={"message": "and Naples?", "session_id": ids["session"]})
    done = await _status(http, ids["session"], nxt.json()["correlation_id"], until="completed")
    assert done["status"] == "completed"
    assert any(m.role == "assistant" and m.text == streamed for m in model.last_messages)


async def test_cancel_is_idempotent_and_a_finished_turn_answers_with_its_outcome(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    started = (await http.post(f"/api/agents/{AGENT}/run", json={"message": "Oslo"})).json()
    url = _turn_url(started["session_id"], started["correlation_id"])
    await asyncio.sleep(0.3)
    first, second = await http.post(f"{url}/cancel"), await http.post(f"{url}/cancel")
    assert first.status_code == 202
    assert second.status_code in (200, 202)
    await _status(http, started["session_id"], started["correlation_id"], until="cancelled")
    third = await http.post(f"{url}/cancel")
    assert third.status_code == 200 and third.json()["status"] == "cancelled"
    assert third.json() == (await http.get(url)).json()

    finished = (await http.post(f"/api/agents/{AGENT}/run", json={"message": "Bern", "wait_for_response": True})).json()
    assert finished["status"] == "success"
    late = await http.post(f"{_turn_url(finished['session_id'], finished['correlation_id'])}/cancel")
    assert late.status_code == 200
    assert late.json()["status"] == "completed" and late.json()["response"] == finished["response"]


async def test_cancel_of_an_unknown_turn_or_with_bad_ids_is_refused(http: httpx.AsyncClient) -> None:
    unknown = await http.post(f"{_turn_url(uuid.uuid4().hex, uuid.uuid4().hex)}/cancel")
    assert unknown.status_code == 404 and "error" in unknown.json()
    for session_id, correlation_id in (("a@b", "x"), ("x", "{y}"), ("x", "a" * 300)):
        bad = await http.post(f"/api/agents/{AGENT}/sessions/{session_id}/turns/{correlation_id}/cancel")
        assert bad.status_code == 400 and "error" in bad.json(), (session_id, correlation_id)
    other_agent = await http.post("/api/agents/Nobody/sessions/x/turns/y/cancel")
    assert other_agent.status_code == 404


async def test_a_queued_turn_that_is_cancelled_never_calls_the_model(
    http: httpx.AsyncClient, durable: DurableClientDouble, model: ScriptedChatClient
) -> None:
    calls_before = model.calls
    first = (await http.post(f"/api/agents/{AGENT}/run", json={"message": "Lisbon"})).json()
    session_id = first["session_id"]
    await eventually(lambda: model.calls > calls_before, timeout=10, message="the first turn never called the model")
    # The entity runs one operation at a time: this turn waits behind the first one.
    queued = (await http.post(f"/api/agents/{AGENT}/run", json={"message": "Porto", "session_id": session_id})).json()
    cancel = await http.post(f"{_turn_url(session_id, queued['correlation_id'])}/cancel")
    assert cancel.status_code == 202

    committed = await _status(http, session_id, queued["correlation_id"], until="cancelled")
    assert committed["status"] == "cancelled" and committed["response"] == ""
    assert (await _status(http, session_id, first["correlation_id"], until="completed"))["status"] == "completed"
    assert model.calls == calls_before + 1, "the cancelled turn reached the model"
    # Its stream ends at once with the cancellation.
    async with aconnect_sse(
        http, "GET", f"/api/agent/stream/{session_id}", params={"correlation_id": queued["correlation_id"]}
    ) as source:
        kinds = [e.event async for e in source.aiter_sse() if e.data or e.event != "message"]
    assert kinds == ["cancelled"]
    plain = await http.get(
        f"/api/agent/stream/{session_id}",
        params={"correlation_id": queued["correlation_id"]},
        headers={"Accept": "text/plain"},
    )
    assert plain.text == "\n[stopped: the turn was cancelled]\n"


async def test_cancel_while_valkey_is_unreachable_is_a_503_and_requests_nothing() -> None:
    down = load_function_app(
        {
            "VALKEY_HOST": "127.0.0.1",
            "VALKEY_PORT": str(free_port()),
            "VALKEY_REQUEST_TIMEOUT_MS": "200",
            "AZURE_OPENAI_ENDPOINT": "",
            "AZURE_OPENAI_DEPLOYMENT": "",
        },
        f"function_app_cancel_down_{uuid.uuid4().hex[:8]}",
    )
    durable = DurableClientDouble(entities=entity_functions(down.app))
    try:
        async with serve(starlette_app_for(down.app, durable)) as url, httpx.AsyncClient(base_url=url) as http:
            response = await http.post(f"{_turn_url(uuid.uuid4().hex, uuid.uuid4().hex)}/cancel")
        assert response.status_code == 503 and "error" in response.json()
        assert durable.signals == []
    finally:
        await down.buffer.aclose()
