"""Client mistakes get a 4xx with a JSON ``{"error": ...}`` body, start no turn and read no stream."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.app.app_harness import DurableClientDouble

RUN = "/api/agents/TravelAgent/run"
STREAM = "/api/agents/TravelAgent/stream"
RESUME = "/api/agent/stream"
STATUS = "/api/agents/TravelAgent/sessions"
GOOD_ID = "0123456789abcdef0123456789abcdef"

CASES: list[tuple[str, str, str, dict[str, Any], int]] = [
    # (case, method, url, request arguments, status)
    ("run: unknown agent", "POST", "/api/agents/NoSuchAgent/run", {"json": {"message": "hi"}}, 404),
    ("run: empty text body", "POST", RUN, {"content": b""}, 400),
    ("run: blank text body", "POST", RUN, {"content": b"  \n\t "}, 400),
    ("run: empty JSON message", "POST", RUN, {"json": {"message": ""}}, 400),
    ("run: JSON without message", "POST", RUN, {"json": {"session_id": GOOD_ID}}, 400),
    ("run: message is not a string", "POST", RUN, {"json": {"message": 42}}, 400),
    ("run: invalid JSON", "POST", RUN, {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
    ("run: JSON array", "POST", RUN, {"json": ["hi"]}, 400),
    ("run: body is not UTF-8", "POST", RUN, {"content": b"\xff\xfe\xfa"}, 400),
    ("run: oversized session id", "POST", RUN, {"json": {"message": "hi", "session_id": "a" * 300}}, 400),
    ("run: session id with braces", "POST", RUN, {"json": {"message": "hi", "session_id": "x{y}"}}, 400),
    ("run: session id with a path", "POST", RUN, {"json": {"message": "hi", "session_id": "../other"}}, 400),
    ("run: session id with glob", "POST", RUN, {"json": {"message": "hi", "session_id": "agent*"}}, 400),
    # "@" separates the parts of a durable entity id: the backend would refuse such a key.
    ("run: session id with an entity separator", "POST", RUN, {"json": {"message": "hi", "session_id": "a@b"}}, 400),
    ("status: session id with an entity separator", "GET", f"{STATUS}/a@b/turns/{GOOD_ID}", {}, 400),
    ("run: session id is a number", "POST", RUN, {"json": {"message": "hi", "session_id": 7}}, 400),
    ("run: empty session id", "POST", RUN, {"json": {"message": "hi", "session_id": ""}}, 400),
    ("run: blank session id", "POST", RUN, {"json": {"message": "hi", "session_id": "\r"}}, 400),
    ("run: empty session id in the query", "POST", RUN, {"content": b"hi", "params": {"session_id": ""}}, 400),
    ("run: session id with a newline", "POST", RUN, {"json": {"message": "hi", "thread_id": "abc\n"}}, 400),
    (
        "run: session id with a space in the header",
        "POST",
        RUN,
        {"content": b"hi", "headers": {"x-ms-session-id": "a b"}},
        400,
    ),
    (
        "run: conflicting session ids",
        "POST",
        RUN,
        {"json": {"message": "hi", "session_id": "one"}, "headers": {"x-ms-session-id": "two"}},
        400,
    ),
    ("run: role not allowed", "POST", RUN, {"json": {"message": "hi", "role": "assistant"}}, 400),
    ("run: message too long", "POST", RUN, {"json": {"message": "x" * 40_000}}, 413),
    ("run: body too large", "POST", RUN, {"content": b"x" * 300_000}, 413),
    ("stream: unknown agent", "POST", "/api/agents/Nope/stream", {"json": {"message": "hi"}}, 404),
    ("stream: empty message", "POST", STREAM, {"json": {"message": "   "}}, 400),
    ("stream: invalid JSON", "POST", STREAM, {"content": b"[1,", "headers": {"Content-Type": "application/json"}}, 400),
    ("stream: bad session id", "POST", STREAM, {"json": {"message": "hi", "session_id": "a:b c"}}, 400),
    ("resume: session id with a space", "GET", f"{RESUME}/a%20b", {}, 400),
    ("resume: session id with braces", "GET", f"{RESUME}/%7Bhash%7D", {}, 400),
    ("resume: oversized session id", "GET", f"{RESUME}/{'s' * 300}", {}, 400),
    ("resume: cursor is not an entry id", "GET", f"{RESUME}/{GOOD_ID}", {"params": {"cursor": "abc"}}, 400),
    ("resume: cursor with three parts", "GET", f"{RESUME}/{GOOD_ID}", {"params": {"cursor": "1-2-3"}}, 400),
    ("resume: negative cursor", "GET", f"{RESUME}/{GOOD_ID}", {"params": {"cursor": "-1"}}, 400),
    (
        "resume: cursor out of range",
        "GET",
        f"{RESUME}/{GOOD_ID}",
        {"params": {"cursor": "99999999999999999999-0"}},
        400,
    ),
    ("resume: bad Last-Event-ID", "GET", f"{RESUME}/{GOOD_ID}", {"headers": {"Last-Event-ID": "nope"}}, 400),
    ("resume: bad correlation id", "GET", f"{RESUME}/{GOOD_ID}", {"params": {"correlation_id": "x y"}}, 400),
    ("status: unknown agent", "GET", f"/api/agents/Nope/sessions/{GOOD_ID}/turns/{GOOD_ID}", {}, 404),
    ("status: bad session id", "GET", f"{STATUS}/a%2Ab/turns/{GOOD_ID}", {}, 400),
    ("status: bad correlation id", "GET", f"{STATUS}/{GOOD_ID}/turns/c%7Bd%7D", {}, 400),
    ("status: oversized correlation id", "GET", f"{STATUS}/{GOOD_ID}/turns/{'c' * 257}", {}, 400),
]


@pytest.mark.parametrize(
    ("method", "url", "arguments", "status"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
async def test_client_mistakes_get_a_json_4xx_and_start_nothing(
    http: httpx.AsyncClient,
    durable: DurableClientDouble,
    method: str,
    url: str,
    arguments: dict[str, Any],
    status: int,
) -> None:
    response = await http.request(method, url, **arguments)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert durable.signals == []
