"""Client mistakes get a 4xx with a JSON ``{"error": ...}`` body, start no turn and read no stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from http_api import MAX_BODY_BYTES
from tests.app.app_harness import DurableClientDouble, entity_functions, load_function_app, serve, starlette_app_for
from tests.app.conftest import app_settings
from tests.valkey_servers import ValkeyProcess

RUN = "/api/agents/TravelAgent/run"
STREAM = "/api/agents/TravelAgent/stream"
RESUME = "/api/agent/stream"
STATUS = "/api/agents/TravelAgent/sessions"
GOOD_ID = "0123456789abcdef0123456789abcdef"
JSON = {"Content-Type": "application/json"}
ARABIC_INDIC_CURSOR = "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660-\u0660"

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
    ("run: system role (off by default)", "POST", RUN, {"json": {"message": "hi", "role": "system"}}, 400),
    ("run: system role in capitals", "POST", RUN, {"json": {"message": "hi", "role": " System "}}, 400),
    ("run: role is not a string", "POST", RUN, {"json": {"message": "hi", "role": {"name": "system"}}}, 400),
    ("stream: system role (off by default)", "POST", STREAM, {"json": {"message": "hi", "role": "system"}}, 400),
    ("run: JSON array nested 100k deep", "POST", RUN, {"content": b"[" * 100_000, "headers": JSON}, 400),
    (
        "run: JSON value nested 10k deep",
        "POST",
        RUN,
        {"content": b'{"message": "hi", "x": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001, "headers": JSON},
        400,
    ),
    (
        "run: message with a lone surrogate",
        "POST",
        RUN,
        {"content": b'{"message": "hi \\ud800"}', "headers": JSON},
        400,
    ),
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
    (
        "resume: cursor in Arabic-Indic digits",
        "GET",
        f"{RESUME}/{GOOD_ID}",
        {"params": {"cursor": ARABIC_INDIC_CURSOR}},
        400,
    ),
    ("resume: cursor in fullwidth digits", "GET", f"{RESUME}/{GOOD_ID}", {"params": {"cursor": "\uff11-\uff10"}}, 400),
    (
        "resume: Last-Event-ID in Arabic-Indic digits (UTF-8 bytes)",
        "GET",
        f"{RESUME}/{GOOD_ID}",
        {"headers": {"Last-Event-ID": ARABIC_INDIC_CURSOR.encode()}},
        400,
    ),
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


async def _raw_request(base_url: str, head: bytes, body_parts: list[bytes]) -> tuple[int, bytes]:
    """Send a request's head and body parts over a socket without ending the body; return (status, body).

    The body is never finished (no rest of a declared length, no last chunk): an app that reads it
    whole waits forever, and the read times out after 5 s.
    """
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head)
        for part in body_parts:
            writer.write(part)
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
            headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = int(headers.split("content-length:", 1)[1].split("\r\n", 1)[0])
            body = await reader.readexactly(length)
        return int(status_line.split()[1]), body
    finally:
        writer.close()


def _head(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode()


async def test_a_declared_oversized_body_is_refused_before_it_is_read(
    base_url: str, durable: DurableClientDouble
) -> None:
    head = _head(RUN, "Content-Type: text/plain", f"Content-Length: {64 * 1024 * 1024}")

    started = time.monotonic()
    status, body = await _raw_request(base_url, head, [b"Three days in Lisbon?"])

    assert status == 413
    assert "larger than" in json.loads(body)["error"]
    assert time.monotonic() - started < 5
    assert durable.signals == []


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(
    base_url: str, durable: DurableClientDouble
) -> None:
    head = _head(STREAM, "Content-Type: text/plain", "Transfer-Encoding: chunked")
    piece = b"x" * (64 * 1024)
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (MAX_BODY_BYTES // len(piece) + 1)

    status, body = await _raw_request(base_url, head, chunks)

    assert status == 413
    assert "larger than" in json.loads(body)["error"]
    assert durable.signals == []


async def test_a_chunked_body_within_the_limit_starts_the_turn(http: httpx.AsyncClient) -> None:
    async def chunked_message() -> Any:
        for word in (b"Three ", b"days ", b"in ", b"Lisbon?"):
            yield word

    response = await http.post(RUN, content=chunked_message(), headers={"Content-Type": "text/plain"})

    assert response.status_code == 202, response.text
    assert response.json()["message"] == "Three days in Lisbon?"


async def test_system_role_is_refused_unless_the_app_setting_allows_it(
    http: httpx.AsyncClient, durable: DurableClientDouble, valkey_server: ValkeyProcess
) -> None:
    system_message = {"message": "Answer in French from now on.", "role": "system"}

    refused = await http.post(RUN, json=system_message)
    assert refused.status_code == 400
    assert "ALLOW_SYSTEM_ROLE_MESSAGES" in refused.json()["error"]
    assert durable.signals == []

    settings = {**app_settings(valkey_server), "ALLOW_SYSTEM_ROLE_MESSAGES": "true"}
    allowing = load_function_app(settings, f"function_app_allowing_system_{uuid.uuid4().hex[:8]}")
    recorder = DurableClientDouble(entities=entity_functions(allowing.app), run_entities=False)
    try:
        async with serve(starlette_app_for(allowing.app, recorder)) as url, httpx.AsyncClient(base_url=url) as client:
            accepted = await client.post(RUN, json=system_message)
    finally:
        await allowing.buffer.aclose()
    assert accepted.status_code == 202, accepted.text
    assert [signal.operation_input["role"] for signal in recorder.signals] == ["system"]
