"""Browser-safe streams over HTTP: stream_url tokens on the anonymous route, and the session history route."""

from __future__ import annotations

import time
import uuid
from types import ModuleType

import httpx
from httpx_sse import aconnect_sse

from tests.app.app_harness import DurableClientDouble
from tests.shown_text import sse_text

AGENT = "TravelAgent"


async def _run(http: httpx.AsyncClient, message: str, **params: str) -> dict:
    body = {"message": message}
    if "session_id" in params:
        body["session_id"] = params.pop("session_id")
    response = await http.post(f"/api/agents/{AGENT}/run", json=body, params=params)
    assert response.status_code == 202, response.text
    return response.json()


async def _events(http: httpx.AsyncClient, url: str, **kwargs: object) -> list:
    async with aconnect_sse(http, "GET", url, **kwargs) as source:  # type: ignore[arg-type]
        assert source.response.status_code == 200, await source.response.aread()
        return [event async for event in source.aiter_sse() if event.data or event.event != "message"]


async def test_a_stream_url_follows_its_turn_without_the_function_key_and_resumes(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    started = await _run(http, "Three days in Lisbon")
    url = started["stream_url"]
    assert url.startswith(f"/api/streams/{started['session_id']}?correlation_id={started['correlation_id']}&token=")
    assert "code=" not in url

    events = await _events(http, url)
    await durable.wait_idle()
    status = (
        await http.get(f"/api/agents/{AGENT}/sessions/{started['session_id']}/turns/{started['correlation_id']}")
    ).json()
    assert events[-1].event == "done"
    assert sse_text(events) == status["response"]

    # Resume after a cut, as EventSource does: the rest, nothing twice.
    cut = next(event for event in events if event.event == "message" and event.data).id
    rest = await _events(http, url, headers={"Last-Event-ID": cut})
    assert [e.id for e in rest] == [e.id for e in events[[e.id for e in events].index(cut) + 1 :]]


async def test_the_token_may_come_as_a_bearer_header_instead_of_in_the_url(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    started = await _run(http, "Two days in Oslo")
    url = httpx.URL(started["stream_url"])
    token = url.params["token"]
    bare = str(url.copy_remove_param("token"))

    events = await _events(http, bare, headers={"Authorization": f"Bearer {token}"})
    assert events[-1].event == "done"
    refused = await http.get(bare, headers={"Authorization": "Bearer not-a-token"})
    assert refused.status_code == 401
    assert (await http.get(bare)).status_code == 401


async def test_a_session_scoped_token_follows_every_turn_of_its_session(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    first = await _run(http, "first", scope="session")
    await durable.wait_idle()
    second = await _run(http, "second", session_id=first["session_id"])
    base, _, query = first["stream_url"].partition("?")
    token = dict(part.split("=", 1) for part in query.split("&"))["token"]
    events = await _events(http, base, params={"token": token, "correlation_id": second["correlation_id"]})
    assert events[-1].event == "done" and "second" in sse_text(events)
    # A turn-scoped token does not reach the other turn.
    turn_token = dict(part.split("=", 1) for part in second["stream_url"].split("?")[1].split("&"))["token"]
    other = await http.get(base, params={"token": turn_token, "correlation_id": first["correlation_id"]})
    assert other.status_code == 403


async def test_bad_tokens_get_401_or_403_and_nothing_of_the_stream(
    http: httpx.AsyncClient, durable: DurableClientDouble, app_module: ModuleType
) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    started = await _run(http, secret)
    await durable.wait_idle()
    session_id, correlation_id = started["session_id"], started["correlation_id"]
    good = dict(part.split("=", 1) for part in started["stream_url"].split("?")[1].split("&"))["token"]
    body, signature = good.split(".")
    tokens = app_module.api.tokens
    expired = await tokens.issue(session_id, correlation_id, now=time.time() - tokens.ttl_seconds - 5)
    other_session = await tokens.issue(uuid.uuid4().hex, correlation_id)
    other_turn = await tokens.issue(session_id, uuid.uuid4().hex)
    url = f"/api/streams/{session_id}"
    cases = [
        ("missing", {"correlation_id": correlation_id}, 401),
        ("empty", {"correlation_id": correlation_id, "token": ""}, 401),
        ("malformed", {"correlation_id": correlation_id, "token": "not-a-token"}, 401),
        ("tampered", {"correlation_id": correlation_id, "token": f"{body}.{signature[::-1]}"}, 401),
        ("expired", {"correlation_id": correlation_id, "token": expired}, 401),
        ("other session", {"correlation_id": correlation_id, "token": other_session}, 403),
        ("other turn", {"correlation_id": correlation_id, "token": other_turn}, 403),
        ("another session's token, no turn named", {"token": other_session}, 403),
    ]
    for name, params, status in cases:
        response = await http.get(url, params=params)
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"].startswith("application/json"), name
        assert "error" in response.json() and secret not in response.text, name
        assert good not in response.text, name
    # The function-key routes are unaffected, and a good token still works.
    assert (await _events(http, url, params={"token": good}))[-1].event == "done"


async def test_the_scope_of_a_run_call_must_be_turn_or_session(http: httpx.AsyncClient) -> None:
    response = await http.post(f"/api/agents/{AGENT}/run", json={"message": "hi"}, params={"scope": "everything"})
    assert response.status_code == 400 and "scope" in response.json()["error"]


async def test_the_history_route_lists_committed_turns_and_the_running_one(
    http: httpx.AsyncClient, durable: DurableClientDouble
) -> None:
    first = await _run(http, "Rome in May")
    await durable.wait_idle()
    second = await _run(http, "And Florence?", session_id=first["session_id"])
    await durable.wait_idle()
    durable.run_entities = False  # the next turn stays accepted but unseen by the entity
    third = await _run(http, "And Venice?", session_id=first["session_id"])

    response = await http.get(f"/api/agents/{AGENT}/sessions/{first['session_id']}")
    assert response.status_code == 200
    history = response.json()
    turns = history["turns"]
    assert [t["correlation_id"] for t in turns] == [
        first["correlation_id"],
        second["correlation_id"],
        third["correlation_id"],
    ]
    assert [t["message"] for t in turns] == ["Rome in May", "And Florence?", "And Venice?"]
    assert [t["status"] for t in turns] == ["completed", "completed", "pending"]
    assert turns[0]["response"].startswith('You asked: "Rome in May"')
    assert history["running"]["correlation_id"] == third["correlation_id"]
    assert history["running"]["stream_url"].startswith(f"/api/streams/{first['session_id']}?")

    unknown = await http.get(f"/api/agents/{AGENT}/sessions/{uuid.uuid4().hex}")
    assert unknown.status_code == 404 and "error" in unknown.json()
    bad = await http.get(f"/api/agents/{AGENT}/sessions/a@b")
    assert bad.status_code == 400
