"""The HTTP routes over real sockets: the app's registered handlers, a durable client double that runs
the entity functions, the real Valkey, and SSE bodies read by a real SSE parser (httpx-sse)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from types import ModuleType

import azure.durable_functions as df
import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.app.app_harness import DurableClientDouble, Signal
from tests.shown_text import sse_text
from travel_agents import FAIL_MARKER, TURN_OPTION_KEY

AGENT = "TravelAgent"


async def _sse_events(
    http: httpx.AsyncClient, method: str, url: str, **kwargs: object
) -> tuple[httpx.Response, list[ServerSentEvent]]:
    async with aconnect_sse(http, method, url, **kwargs) as source:  # type: ignore[arg-type]
        events = [event async for event in source.aiter_sse()]
        return source.response, events


async def _committed(
    http: httpx.AsyncClient, durable: DurableClientDouble, session_id: str, correlation_id: str
) -> dict:
    await durable.wait_idle()
    response = await http.get(f"/api/agents/{AGENT}/sessions/{session_id}/turns/{correlation_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_run_accepts_the_turn_and_signals_the_agent_entity(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    response = await http.post(f"/api/agents/{AGENT}/run", json={"message": "Plan a weekend in Tokyo"})

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert body["message"] == "Plan a weekend in Tokyo"
    session_id, correlation_id = body["session_id"], body["correlation_id"]
    assert response.headers["x-session-id"] == session_id
    assert response.headers["x-correlation-id"] == correlation_id
    [signal] = durable.signals
    assert (signal.entity_name, signal.key, signal.operation) == ("dafx-TravelAgent", session_id, "run")
    assert signal.operation_input["correlationId"] == correlation_id
    assert signal.operation_input["message"] == "Plan a weekend in Tokyo"
    turn = signal.operation_input["options"][TURN_OPTION_KEY]
    assert (turn["session_id"], turn["correlation_id"]) == (session_id, correlation_id)
    assert abs(turn["accepted_at_ms"] / 1000 - time.time()) < 60  # for the time to first chunk
    committed = await _committed(http, durable, session_id, correlation_id)
    assert committed["status"] == "completed"
    assert committed["response"].startswith('You asked: "Plan a weekend in Tokyo"')


async def test_run_takes_the_session_from_header_query_or_body_and_continues_it(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    session_id = uuid.uuid4().hex
    by_header = await http.post(
        f"/api/agents/{AGENT}/run", content="First, by header", headers={"x-ms-session-id": session_id}
    )
    by_query = await http.post(f"/api/agents/{AGENT}/run", params={"session_id": session_id}, content="Then by query")
    by_body = await http.post(f"/api/agents/{AGENT}/run", json={"message": "And by body", "thread_id": session_id})

    assert [r.status_code for r in (by_header, by_query, by_body)] == [202, 202, 202]
    assert {r.json()["session_id"] for r in (by_header, by_query, by_body)} == {session_id}
    assert {signal.key for signal in durable.signals} == {session_id}
    committed = await _committed(http, durable, session_id, by_body.json()["correlation_id"])
    assert committed["message_count"] == 6


async def test_run_with_wait_for_response_returns_the_committed_answer(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/api/agents/{AGENT}/run", params={"wait_for_response": "true"}, content="Two days in Oslo in May"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert "Oslo in May: cool, 9 °C." in body["response"]
    assert body["message_count"] == 2
    assert set(body) >= {"response", "message", "session_id", "status", "correlation_id"}


async def test_run_with_wait_for_response_reports_a_failed_turn(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/api/agents/{AGENT}/run",
        json={"message": f"Fail please {FAIL_MARKER}"},
        headers={"x-ms-wait-for-response": "true"},
    )

    assert response.status_code == 500
    assert response.json()["status"] == "failed"
    assert "ScriptedModelError" in response.json()["error"]


async def test_stream_starts_the_turn_and_streams_it_live_as_sse(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    response, events = await _sse_events(
        http, "POST", f"/api/agents/{AGENT}/stream", json={"message": "Plan a trip to Seattle in July"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    session_id, correlation_id = response.headers["x-session-id"], response.headers["x-correlation-id"]
    start = events[0]
    assert start.event == "start"
    stream_url = response.headers["x-stream-url"]
    assert json.loads(start.data) == {
        "agent": AGENT,
        "session_id": session_id,
        "correlation_id": correlation_id,
        "stream_url": stream_url,
    }
    assert stream_url.startswith(f"/api/streams/{session_id}?correlation_id={correlation_id}&token=")
    assert events[-1].event == "done"
    messages = [event for event in events if event.event == "message"]
    assert len(messages) > 5
    assert all(event.id for event in events[1:]), "every stream event carries its entry id for resuming"
    committed = await _committed(http, durable, session_id, correlation_id)
    assert sse_text(events) == committed["response"]


async def test_stream_as_plain_text(http: httpx.AsyncClient, durable: DurableClientDouble) -> None:
    response = await http.post(
        f"/api/agents/{AGENT}/stream", content="Plain text, please", headers={"Accept": "text/plain"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    committed = await _committed(http, durable, response.headers["x-session-id"], response.headers["x-correlation-id"])
    assert response.text == committed["response"]


async def test_stream_of_a_failing_turn_ends_with_an_error_event(http: httpx.AsyncClient) -> None:
    response, events = await _sse_events(
        http, "POST", f"/api/agents/{AGENT}/stream", json={"message": f"This breaks {FAIL_MARKER}"}
    )

    assert response.status_code == 200
    assert events[-1].event == "error"
    assert "ScriptedModelError" in events[-1].data
    assert events[-1].id, "the error is a stream entry, not a reader timeout"


async def test_resume_from_last_event_id_continues_without_loss_or_duplicates(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    _, first_read = await _sse_events(http, "POST", f"/api/agents/{AGENT}/stream", json={"message": "Resume me"})
    session_id = json.loads(first_read[0].data)["session_id"]
    correlation_id = json.loads(first_read[0].data)["correlation_id"]
    seen = first_read[1:4]  # the client saw three events, then the connection dropped

    _, rest = await _sse_events(
        http,
        "GET",
        f"/api/agent/stream/{session_id}",
        params={"correlation_id": correlation_id, "cursor": "0"},  # an older cursor in the URL ...
        headers={"Last-Event-ID": seen[-1].id},  # ... loses to the id the browser sends on reconnect
    )

    assert [event.id for event in seen + rest] == [event.id for event in first_read[1:]]
    assert sse_text(seen + rest) == sse_text(first_read)


async def test_resume_with_cursor_query_as_plain_text(http: httpx.AsyncClient) -> None:
    _, events = await _sse_events(http, "POST", f"/api/agents/{AGENT}/stream", json={"message": "Cursor me"})
    ids = json.loads(events[0].data)
    cut = events[3]

    response = await http.get(
        f"/api/agent/stream/{ids['session_id']}",
        params={"cursor": cut.id, "correlation_id": ids["correlation_id"]},
        headers={"Accept": "text/plain"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert sse_text(events[1:4]) + response.text == sse_text(events)


async def test_resume_without_correlation_id_ends_at_the_first_turn(http: httpx.AsyncClient) -> None:
    session_id = uuid.uuid4().hex
    for message in ("First turn", "Second turn"):
        response, _ = await _sse_events(
            http, "POST", f"/api/agents/{AGENT}/stream", json={"message": message, "session_id": session_id}
        )
        assert response.status_code == 200

    response, events = await _sse_events(http, "GET", f"/api/agent/stream/{session_id}")

    assert events[-1].event == "done"
    assert sse_text(events).startswith('You asked: "First turn"')


async def test_stream_is_sent_as_it_is_written(http: httpx.AsyncClient, app_module: ModuleType) -> None:
    session_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
    buffer = app_module.buffer
    async with aconnect_sse(
        http, "GET", f"/api/agent/stream/{session_id}", params={"correlation_id": correlation_id}
    ) as source:
        events = source.aiter_sse()
        await buffer.write_chunk(session_id, "first ", correlation_id=correlation_id)
        first = await asyncio.wait_for(anext(events), 5)
        # The first chunk arrived while the turn is still open: the body is not assembled afterwards.
        await buffer.write_chunk(session_id, "second", correlation_id=correlation_id)
        second = await asyncio.wait_for(anext(events), 5)
        await buffer.write_completion(session_id, correlation_id=correlation_id)
        done = await asyncio.wait_for(anext(events), 5)

    assert [(e.event, e.data) for e in (first, second, done)] == [
        ("message", "first "),
        ("message", "second"),
        ("done", ""),
    ]


async def test_turn_status_is_pending_from_acceptance_until_the_commit(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    durable.run_entities = False  # the extension has not picked the signal up yet
    accepted = (await http.post(f"/api/agents/{AGENT}/run", content="Hold on")).json()
    status_url = f"/api/agents/{AGENT}/sessions/{accepted['session_id']}/turns/{accepted['correlation_id']}"

    # The entity knows nothing of the turn yet; the route that accepted it does.
    not_yet = await http.get(status_url)
    assert not_yet.status_code == 200
    assert not_yet.json()["status"] == "pending"
    # Another agent, or a turn never accepted, is still unknown.
    never = await http.get(f"/api/agents/{AGENT}/sessions/{accepted['session_id']}/turns/{uuid.uuid4().hex}")
    assert never.status_code == 404 and never.json()["status"] == "not_found" and "error" in never.json()

    [signal] = durable.signals
    durable.run_entities = True
    await durable.signal_entity(_entity_id(signal), signal.operation, signal.operation_input)
    await durable.wait_idle()
    final = await http.get(status_url)
    assert final.status_code == 200
    assert final.json()["status"] == "completed"
    assert final.json()["response"].startswith('You asked: "Hold on"')


async def test_turn_status_reports_pending_for_a_requested_turn_without_response(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    from agent_framework_durabletask import DurableAgentState, DurableAgentStateRequest, RunRequest

    session_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
    state = DurableAgentState()
    request = RunRequest(message="Still running", correlation_id=correlation_id)
    state.data.conversation_history.append(DurableAgentStateRequest.from_run_request(request))
    durable.states[("dafx-TravelAgent", session_id)] = json.dumps(state.to_dict())

    response = await http.get(f"/api/agents/{AGENT}/sessions/{session_id}/turns/{correlation_id}")

    assert response.status_code == 200
    assert response.json()["status"] == "pending"


async def test_health_reports_valkey_and_the_agents(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["valkey"]["reachable"] is True
    assert body["agents"] == [{"name": AGENT}]


async def test_chat_page_is_served_as_html(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/chat")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # It follows streams with fetch (headers carry the key and the token), resuming with Last-Event-ID.
    assert "Last-Event-ID" in response.text and "EventSource(" not in response.text


async def test_workflow_page_is_served_as_html_without_a_function_key(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/workflow/trip_planner/page")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    # It follows the instance's stream with fetch, resuming with Last-Event-ID, and answers the approval.
    assert "Last-Event-ID" in response.text and "EventSource(" not in response.text
    assert 'id="approve"' in response.text and 'id="request-changes"' in response.text


@pytest.mark.parametrize("path", ["/api/chat", "/api/workflow/trip_planner/page"])
async def test_a_page_is_served_with_the_shared_script_inline(http: httpx.AsyncClient, path: str) -> None:
    # static/page.js (the key header, the Markdown renderer, the SSE reader) is in the page itself:
    # the page needs no route for it, and a page served without it would break.
    page = (await http.get(path)).text
    assert 'src="page.js"' not in page
    assert page.count("</script>") == 2  # the inlined script's and the page's own
    assert page.count("function markdownToHtml(") == 1 and page.count("async function readEvents(") == 1
    assert page.index("function apiHeaders(") < page.index('"use strict";\n// Everything the page knows')


async def test_the_page_of_a_workflow_not_hosted_is_a_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/workflow/no_such_workflow/page")

    assert response.status_code == 404
    assert "trip_planner" in response.json()["error"]


def _entity_id(signal: Signal) -> df.EntityId:
    return df.EntityId(signal.entity_name, signal.key)


async def test_a_durable_backend_that_refuses_the_signal_gives_503(
    http: httpx.AsyncClient, durable: DurableClientDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*args: object) -> None:
        raise ConnectionError("task hub storage is unreachable")

    monkeypatch.setattr(durable, "signal_entity", refuse)

    run = await http.post(f"/api/agents/{AGENT}/run", content="hi")
    stream = await http.post(f"/api/agents/{AGENT}/stream", content="hi")

    assert [run.status_code, stream.status_code] == [503, 503]
    assert "could not be started" in run.json()["error"]
    assert "could not be started" in stream.json()["error"]
