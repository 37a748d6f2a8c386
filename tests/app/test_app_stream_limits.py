"""Stream responses end on time with a ``retry:`` hint, send heartbeats while idle, and a Valkey outage
gives 503 on the stream routes while a started turn still runs and commits."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from types import ModuleType

import httpx
import pytest
from httpx_sse import aconnect_sse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from http_api import AgentHttpApi, StreamSettings
from tests.app.app_harness import DurableClientDouble, entity_functions, load_function_app, serve, starlette_app_for
from tests.eventually import eventually
from tests.valkey_servers import free_port
from valkey_buffer import ValkeyStreamBuffer


@pytest.fixture
async def short_stream_url(buffer: ValkeyStreamBuffer) -> AsyncIterator[str]:
    """The resume and AG-UI routes of an API whose responses last 1 s at most, with heartbeats every 0.2 s."""
    api = AgentHttpApi(
        buffer=buffer,
        agent_names=["TravelAgent"],
        stream_settings=StreamSettings(max_duration_seconds=1.0, heartbeat_seconds=0.2, retry_ms=1500),
    )
    durable = DurableClientDouble(entities={})

    async def resume(request: Request) -> Response:
        return await api.resume_stream(request, durable)

    async def agui(request: Request) -> Response:
        return await api.agui_run(request, durable)

    app = Starlette(
        routes=[
            Route("/api/agent/stream/{session_id}", resume),
            Route("/api/agents/{name}/ag-ui", agui, methods=["POST"]),
        ]
    )
    async with serve(app) as url:
        yield url


async def test_idle_stream_sends_heartbeats_then_ends_on_time_with_a_retry_hint(short_stream_url: str) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=short_stream_url, timeout=10) as http:
        response = await http.get(f"/api/agent/stream/{uuid.uuid4().hex}")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.text.count(": keep-alive\n\n") >= 3
    assert response.text.endswith("retry: 1500\n\n")
    assert 0.9 < elapsed < 3.0


async def test_an_idle_ag_ui_run_sends_heartbeats_then_ends_on_time_with_a_retry_hint(
    short_stream_url: str, buffer: ValkeyStreamBuffer
) -> None:
    # A run the thread has accepted whose turn writes nothing yet: the AG-UI route re-attaches to it.
    session_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
    await buffer.record_turn_accepted(session_id, correlation_id, "TravelAgent", message="Lisbon?")
    run = {
        "threadId": session_id,
        "runId": correlation_id,
        "messages": [{"id": uuid.uuid4().hex, "role": "user", "content": "Lisbon?"}],
    }
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=short_stream_url, timeout=10) as http:
        response = await http.post("/api/agents/TravelAgent/ag-ui", json=run)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.text.count('"type":"RUN_STARTED"') == 1
    assert response.text.count(": keep-alive\n\n") >= 3
    assert response.text.endswith("retry: 1500\n\n")
    assert 0.9 < elapsed < 3.0


async def test_a_stream_cut_on_time_continues_from_last_event_id(
    short_stream_url: str, buffer: ValkeyStreamBuffer
) -> None:
    session_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
    await buffer.write_chunk(session_id, "Long ", correlation_id=correlation_id)
    await buffer.write_chunk(session_id, "turn", correlation_id=correlation_id)
    url = f"/api/agent/stream/{session_id}"
    params = {"correlation_id": correlation_id}

    async with httpx.AsyncClient(base_url=short_stream_url, timeout=10) as http:
        async with aconnect_sse(http, "GET", url, params=params) as source:
            first = [event async for event in source.aiter_sse()]
        first_id = next(event.id for event in reversed(first) if event.data)
        await buffer.write_completion(session_id, correlation_id=correlation_id)
        async with aconnect_sse(http, "GET", url, params=params, headers={"Last-Event-ID": first_id}) as source:
            second = [event async for event in source.aiter_sse()]

    # httpx-sse reports the blank line after a heartbeat comment as an empty event (a browser's
    # EventSource dispatches nothing there): leave those out.
    first_events = [event for event in first if event.data or event.event != "message"]
    assert [(event.event, event.data) for event in first_events] == [("message", "Long "), ("message", "turn")]
    assert first[-1].retry == 1500
    assert [event.event for event in second if event.data or event.event != "message"] == ["done"]


async def test_valkey_outage_gives_503_on_every_route_that_needs_it_and_starts_no_turn() -> None:
    outage_app = load_function_app(
        {
            "VALKEY_HOST": "127.0.0.1",
            "VALKEY_PORT": str(free_port()),  # nothing listens there
            "VALKEY_REQUEST_TIMEOUT_MS": "200",
            "SCRIPTED_CHUNK_DELAY_MS": "0",
            "AZURE_OPENAI_ENDPOINT": "",
            "AZURE_OPENAI_DEPLOYMENT": "",
        },
        f"function_app_outage_{uuid.uuid4().hex[:8]}",
    )
    _assert_is_module(outage_app)
    durable = DurableClientDouble(entities=entity_functions(outage_app.app))
    try:
        async with (
            serve(starlette_app_for(outage_app.app, durable)) as url,
            httpx.AsyncClient(base_url=url, timeout=60) as http,
        ):
            health = await http.get("/api/health")
            stream = await http.post("/api/agents/TravelAgent/stream", json={"message": "hi"})
            resume = await http.get(f"/api/agent/stream/{uuid.uuid4().hex}")
            # A turn that could not be recorded would be unknown to the status route until it
            # commits: it is refused, and the client may retry.
            run = await http.post("/api/agents/TravelAgent/run", json={"message": "hi"})
            status = await http.get(f"/api/agents/TravelAgent/sessions/{uuid.uuid4().hex}/turns/{uuid.uuid4().hex}")
            responses = (health, stream, resume, run, status)
            assert [r.status_code for r in responses] == [503] * 5
            assert all("error" in r.json() for r in responses)
            assert durable.signals == [], "nothing that cannot be served starts a turn"
    finally:
        await outage_app.buffer.aclose()


def _assert_is_module(module: object) -> None:
    assert isinstance(module, ModuleType)


async def test_plain_text_stream_cut_on_time_names_the_cursor_to_resume_from(
    short_stream_url: str, buffer: ValkeyStreamBuffer
) -> None:
    session_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
    await buffer.write_chunk(session_id, "Half a ", correlation_id=correlation_id)
    await buffer.write_chunk(session_id, "turn", correlation_id=correlation_id)
    reader = buffer.read_stream(session_id, correlation_id=correlation_id)  # writes are queued: wait for both
    async with asyncio.timeout(5):
        last = [await anext(reader), await anext(reader)][-1]
    await reader.aclose()
    url = f"/api/agent/stream/{session_id}"

    async with httpx.AsyncClient(base_url=short_stream_url, timeout=10) as http:
        cut = await http.get(url, params={"correlation_id": correlation_id}, headers={"Accept": "text/plain"})
        await buffer.write_chunk(session_id, ", then the rest.", correlation_id=correlation_id)
        await buffer.write_completion(session_id, correlation_id=correlation_id)
        rest = await http.get(
            url, params={"correlation_id": correlation_id, "cursor": last.entry_id}, headers={"Accept": "text/plain"}
        )

    assert cut.text == f"Half a turn\n[time limit of this response reached; resume with cursor={last.entry_id}]\n"
    assert rest.text == ", then the rest."


async def test_a_client_that_stops_reading_holds_bounded_memory_and_is_cut_at_the_time_limit(
    short_stream_url: str, buffer: ValkeyStreamBuffer
) -> None:
    session_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
    await buffer.write_chunk(session_id, "start ", correlation_id=correlation_id)
    host, port = short_stream_url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    # A client with a tiny receive window that sends its request and then reads nothing at all.
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    await loop.sock_connect(client, (host, int(port)))
    request = f"GET /api/agent/stream/{session_id}?correlation_id={correlation_id} HTTP/1.1\r\nHost: x\r\n\r\n"
    await loop.sock_sendall(client, request.encode())
    try:
        started = time.monotonic()
        await eventually(lambda: buffer.reader_stats().active > 0, timeout=5, message="the reader never joined")

        # The agent keeps streaming: far more than every socket buffer on the way can hold.
        most_queued = 0
        for i in range(4000):
            await buffer.write_chunk(session_id, f"{i:05d} " + "x" * 2000, correlation_id=correlation_id)
            if i % 50 == 0:
                await asyncio.sleep(0.001)
                most_queued = max(most_queued, buffer.reader_stats().queued_entries)

        def released() -> bool:
            nonlocal most_queued
            stats = buffer.reader_stats()
            most_queued = max(most_queued, stats.queued_entries)
            return stats.active == 0

        await eventually(
            released,
            timeout=max(0.0, 15 - (time.monotonic() - started)),
            interval=0.02,
            message="the server never ended the response of the client that reads nothing",
        )
        released_after = time.monotonic() - started
    finally:
        client.close()

    # The reader fell behind and was sent back to Valkey instead of queueing thousands of entries...
    assert buffer.reader_stats().overflows >= 1
    assert most_queued <= 1024
    # ...and the server ended the response at its hard limit (1 s + heartbeat + 5 s) with the client
    # still reading nothing, releasing the reader.
    assert buffer.reader_stats().active == 0
    assert released_after < 1 + 0.2 + 5 + 2, f"reader released after {released_after:.1f} s"
