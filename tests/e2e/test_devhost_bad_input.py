"""Bad input fuzzed through ids, cursors, headers and bodies against a running local host: 4xx only, no leaks."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.e2e.devhost_process import DevHostProcess
from tests.e2e.sse_turns import committed_turn, follow_turn, start_turn
from valkey_buffer import InvalidCursorError, InvalidIdError, parse_cursor, validate_id

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Printable ASCII without surrounding blanks where the value travels in a header (httpx refuses the
# rest before sending, and HTTP strips the blanks anyway).
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(str.strip)
# Ids that try to reach other keys: separators, glob and hash-tag characters, traversal, unicode, length.
hostile_ids = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["*", "agent-stream:*", "{x}", "a b", "../x", "a/b", "%2F", "x\u00e9", "a\x00b", "@@", "a@b", "-a"]
    ),
    st.text(alphabet="abc", min_size=257, max_size=300),
)


def _is_valid_id(value: str) -> bool:
    try:
        validate_id(value)
    except InvalidIdError:
        return False
    return True


def _is_valid_cursor(value: str) -> bool:
    try:
        parse_cursor(value)
    except InvalidCursorError:
        return False
    return True


@pytest.fixture(scope="module")
def secret_turn(devhost: DevHostProcess, agent_name: str) -> Iterator[str]:
    """A committed turn whose text must never show up in an answer to another session's request."""
    secret = f"secret-{uuid.uuid4().hex}"
    with httpx.Client(timeout=30) as client:
        session_id, correlation_id = start_turn(client, devhost.api, agent_name, secret)
        assert committed_turn(client, devhost.api, agent_name, session_id, correlation_id)["status"] == "completed"
    yield secret


def _assert_refused(response: httpx.Response, secret: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert secret not in response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        assert "error" in response.json()


@FUZZ
@given(session_id=hostile_ids)
def test_stream_route_refuses_ids_that_could_reach_another_key(
    devhost: DevHostProcess, http: httpx.Client, secret_turn: str, session_id: str
) -> None:
    assume(not _is_valid_id(session_id))
    response = http.get(f"{devhost.api}/agent/stream/{quote(session_id, safe='')}", timeout=5)
    _assert_refused(response, secret_turn)


@FUZZ
@given(cursor=st.text(max_size=60), header=header_text, correlation_id=st.one_of(st.none(), hostile_ids))
def test_stream_route_refuses_malformed_cursors_headers_and_turn_ids(
    devhost: DevHostProcess,
    http: httpx.Client,
    secret_turn: str,
    cursor: str,
    header: str,
    correlation_id: str | None,
) -> None:
    # Something must be wrong, or the request is a valid read of an empty session (it would wait).
    # Last-Event-ID wins over the cursor query value when both are there, as EventSource expects.
    cid_ok = correlation_id is None or correlation_id == "" or _is_valid_id(correlation_id)
    assume(not (cid_ok and _is_valid_cursor(header.strip() or cursor)))
    params = {"cursor": cursor}
    if correlation_id is not None:
        params["correlation_id"] = correlation_id
    response = http.get(
        f"{devhost.api}/agent/stream/{uuid.uuid4().hex}",
        params=params,
        headers={"Last-Event-ID": header},
        timeout=5,
    )
    _assert_refused(response, secret_turn)


@FUZZ
@given(name=st.one_of(st.text(max_size=30), st.just("TravelAgent")), session_id=hostile_ids, turn=hostile_ids)
def test_status_route_answers_bad_or_unknown_ids_with_4xx(
    devhost: DevHostProcess, http: httpx.Client, secret_turn: str, name: str, session_id: str, turn: str
) -> None:
    path = "/".join(quote(part, safe="") for part in (name, "sessions", session_id, "turns", turn))
    response = http.get(f"{devhost.api}/agents/{path}", timeout=5)
    _assert_refused(response, secret_turn)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
bad_run_bodies = st.one_of(
    # Not JSON at all, sent as JSON.
    st.binary(max_size=200).filter(lambda b: not _parses_as_json(b)).map(lambda b: (b, "application/json")),
    # JSON whose message is missing, empty or not a string.
    st.fixed_dictionaries(
        {"message": st.one_of(st.just(""), st.just("   "), json_values.filter(lambda v: not isinstance(v, str)))}
    ).map(lambda d: (json.dumps(d).encode(), "application/json")),
    # A fine message with a hostile session id (the route trims blanks around it, and a blank one
    # counts as "no session": a new one starts).
    hostile_ids.filter(lambda s: s.strip() != "" and not _is_valid_id(s.strip())).map(
        lambda s: (json.dumps({"message": "hi", "session_id": s}).encode(), "application/json")
    ),
    # JSON nested deeper than the app takes (Python's decoder would hit its recursion limit).
    st.integers(min_value=33, max_value=100_000).map(lambda depth: (b"[" * depth, "application/json")),
    # An empty plain-text body.
    st.just((b"", "text/plain")),
    # A body over the size limit.
    st.just((b"x" * (300 * 1024), "text/plain")),
)


def _parses_as_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


@FUZZ
@given(body=bad_run_bodies, session_header=st.one_of(st.none(), header_text))
def test_run_route_refuses_bad_bodies_and_session_headers(
    devhost: DevHostProcess,
    http: httpx.Client,
    agent_name: str,
    secret_turn: str,
    body: tuple[bytes, str],
    session_header: str | None,
) -> None:
    content, content_type = body
    headers = {"content-type": content_type}
    if session_header is not None:
        headers["x-ms-session-id"] = session_header
    for agent in (agent_name, "no-such-agent"):
        response = http.post(f"{devhost.api}/agents/{agent}/run", content=content, headers=headers, timeout=10)
        _assert_refused(response, secret_turn)


def test_a_64_mib_content_length_is_refused_before_the_body_arrives(devhost: DevHostProcess, agent_name: str) -> None:
    head = (
        f"POST /api/agents/{agent_name}/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", devhost.port), timeout=5) as client:
        client.sendall(head.encode() + b"only these bytes follow")
        # Times out (a failure) if the host waits for the other 64 MiB.
        response = client.makefile("rb")
        status = response.readline()
        headers = {}
        while (line := response.readline().strip()) != b"":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = json.loads(response.read(int(headers["content-length"])))
    assert status.startswith(b"HTTP/1.1 413"), status
    assert "larger than" in body["error"]


@pytest.mark.parametrize(
    ("where", "cursor"),
    [
        ("cursor", "\u0661\u0667\u0660\u0660-\u0660"),  # Arabic-Indic "1700-0"
        ("cursor", "\uff11\uff17\uff10\uff10-\uff10"),  # fullwidth "1700-0"
        ("Last-Event-ID", "\u0661\u0667\u0660\u0660-\u0660"),
    ],
)
def test_cursors_in_other_scripts_digits_are_refused(
    devhost: DevHostProcess, http: httpx.Client, secret_turn: str, where: str, cursor: str
) -> None:
    url = f"{devhost.api}/agent/stream/{uuid.uuid4().hex}"
    if where == "cursor":
        response = http.get(url, params={"cursor": cursor}, timeout=5)
    else:
        response = http.get(url, headers={"Last-Event-ID": cursor.encode()}, timeout=5)
    assert response.status_code == 400, response.text[:300]
    _assert_refused(response, secret_turn)


def test_host_stays_healthy_and_serves_turns_after_the_fuzzing(
    devhost: DevHostProcess, http: httpx.Client, agent_name: str, secret_turn: str
) -> None:
    assert http.get(f"{devhost.api}/health").status_code == 200
    session_id, correlation_id = start_turn(http, devhost.api, agent_name, "still fine?")
    turn = follow_turn(http, devhost.api, session_id, correlation_id, cut_after=[3])
    assert turn.text == committed_turn(http, devhost.api, agent_name, session_id, correlation_id)["response"]
    assert secret_turn not in turn.text
    assert "failed; see the host log" not in devhost.log()  # no handler raised on any of the input above
