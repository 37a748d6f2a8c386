"""The edges of a turn on the resume route: cursors at, after and beyond its end, and a stream that is gone.

A reader of a finished turn must end at once, never wait for a timeout; a cursor no entry can have
is a 400, not a Valkey outage.
"""

from __future__ import annotations

import time
import uuid

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.app.app_harness import DurableClientDouble
from tests.shown_text import sse_text
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import StreamChunk, ValkeyStreamBuffer

AGENT = "TravelAgent"
RESUME = "/api/agent/stream"


async def _finished_turn(
    http: httpx.AsyncClient, durable: DurableClientDouble, message: str, session_id: str | None = None
) -> tuple[str, str, str]:
    body = {"message": message} | ({"session_id": session_id} if session_id else {})
    accepted = (await http.post(f"/api/agents/{AGENT}/run", json=body)).json()
    await durable.wait_idle()
    status = await http.get(f"/api/agents/{AGENT}/sessions/{accepted['session_id']}/turns/{accepted['correlation_id']}")
    assert status.json()["status"] == "completed"
    return accepted["session_id"], accepted["correlation_id"], status.json()["response"]


async def _entries(buffer: ValkeyStreamBuffer, session_id: str, correlation_id: str) -> list[StreamChunk]:
    return await buffer.read_available(session_id, correlation_id=correlation_id)


async def _resume(
    http: httpx.AsyncClient, session_id: str, correlation_id: str, cursor: str
) -> tuple[float, list[ServerSentEvent]]:
    started = time.monotonic()
    params = {"correlation_id": correlation_id}
    async with aconnect_sse(
        http, "GET", f"{RESUME}/{session_id}", params=params, headers={"Last-Event-ID": cursor}
    ) as source:
        assert source.response.status_code == 200
        events = [event async for event in source.aiter_sse() if event.data or event.event != "message"]
    return time.monotonic() - started, events


async def test_a_cursor_at_the_turns_end_gets_that_end_at_once(
    http: httpx.AsyncClient, durable: DurableClientDouble, buffer: ValkeyStreamBuffer
) -> None:
    session_id, correlation_id, _ = await _finished_turn(http, durable, "Ends here")
    done = (await _entries(buffer, session_id, correlation_id))[-1]
    assert done.is_done

    took, events = await _resume(http, session_id, correlation_id, done.entry_id)

    assert [(event.event, event.id) for event in events] == [("done", done.entry_id)]
    assert took < 1.0


async def test_a_cursor_after_the_turns_end_ends_at_once(
    http: httpx.AsyncClient, durable: DurableClientDouble, buffer: ValkeyStreamBuffer
) -> None:
    session_id, first, _ = await _finished_turn(http, durable, "First turn")
    _, second, _ = await _finished_turn(http, durable, "Second turn", session_id)
    first_done = (await _entries(buffer, session_id, first))[-1]
    # A cursor in the middle of the next turn, and one at the stream's very end.
    later = await _entries(buffer, session_id, second)
    for cursor in (later[len(later) // 2].entry_id, later[-1].entry_id):
        took, events = await _resume(http, session_id, first, cursor)
        assert [(event.event, event.id) for event in events] == [("done", first_done.entry_id)]
        assert took < 1.0


async def test_a_cursor_ahead_of_the_stream_is_a_400_not_an_outage(
    http: httpx.AsyncClient, durable: DurableClientDouble, buffer: ValkeyStreamBuffer
) -> None:
    session_id, correlation_id, _ = await _finished_turn(http, durable, "Short")
    last = (await _entries(buffer, session_id, correlation_id))[-1].entry_id
    ms, _, seq = last.partition("-")
    largest = f"{2**64 - 1}-{2**64 - 1}"
    for cursor in (f"{ms}-{int(seq) + 1}", f"{int(ms) + 1}-0", largest):
        for where in ({"params": {"cursor": cursor}}, {"headers": {"Last-Event-ID": cursor}}):
            response = await http.get(f"{RESUME}/{session_id}", **where)  # type: ignore[arg-type]
            assert response.status_code == 400, (cursor, response.text)
            assert "after the stream's newest entry" in response.json()["error"]
            assert "unavailable" not in response.json()["error"].lower()


async def test_a_finished_turn_whose_stream_is_gone_ends_with_the_committed_text_at_once(
    http: httpx.AsyncClient, durable: DurableClientDouble, buffer: ValkeyStreamBuffer, valkey_server: ValkeyProcess
) -> None:
    session_id, correlation_id, committed = await _finished_turn(http, durable, "Forget my stream")
    last = (await _entries(buffer, session_id, correlation_id))[-1].entry_id
    valkey_server.command("DEL", f"agent-stream:{session_id}")  # expired, or lost by a Valkey restart

    for cursor in ("0", last):
        took, events = await _resume(http, session_id, correlation_id, cursor)
        assert [event.event for event in events] == ["replace", "done"]
        assert sse_text(events) == committed
        assert took < 1.5


async def test_a_session_without_any_turn_reads_nothing_and_ends_on_the_idle_timeout(
    http: httpx.AsyncClient,
) -> None:
    # No turn named, nothing to reconcile with: the reader's idle timeout (10 s here) still holds.
    response = await http.get(f"{RESUME}/{uuid.uuid4().hex}", params={"cursor": "0"}, timeout=30)
    assert response.status_code == 200
    assert "event: error" in response.text and "no new entries" in response.text
