"""Settings, ids, cursors and SSE framing: bad input is rejected with a message that names it."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import EventSource
from hypothesis import given
from hypothesis import strategies as st

from http_api import chunk_to_sse, encode_sse_comment, encode_sse_event
from valkey_buffer import (
    InvalidCursorError,
    InvalidIdError,
    StreamChunk,
    StreamInputError,
    ValkeySettings,
    ValkeyStreamBuffer,
    parse_cursor,
    validate_id,
)


def test_settings_from_env_reads_every_variable() -> None:
    settings = ValkeySettings.from_env(
        {
            "VALKEY_HOST": "cache.example",
            "VALKEY_PORT": "10000",
            "VALKEY_TLS": "true",
            "VALKEY_CLUSTER": "TRUE",
            "VALKEY_USERNAME": "object-id",
            "VALKEY_AUTH": "entra",
            "VALKEY_STREAM_TTL_SECONDS": "600",
            "VALKEY_STREAM_MAXLEN": "5000",
            "VALKEY_READ_BLOCK_MS": "2000",
            "VALKEY_READ_IDLE_TIMEOUT_SECONDS": "30.5",
            "VALKEY_REQUEST_TIMEOUT_MS": "750",
        }
    )
    assert settings == ValkeySettings(
        host="cache.example",
        port=10000,
        tls=True,
        cluster=True,
        username="object-id",
        auth="entra",
        stream_ttl_seconds=600,
        stream_maxlen=5000,
        read_block_ms=2000,
        read_idle_timeout_seconds=30.5,
        request_timeout_ms=750,
    )
    assert ValkeySettings.from_env({}) == ValkeySettings()
    assert ValkeySettings.from_env({"VALKEY_STREAM_MAXLEN": ""}).stream_maxlen is None


def test_settings_from_url_and_overrides() -> None:
    settings = ValkeySettings.from_env(
        {"VALKEY_URL": "valkeys://app:p%40ss@cache.example:10000?cluster=true", "VALKEY_PORT": "6380"}
    )
    assert (settings.host, settings.port, settings.tls, settings.cluster) == ("cache.example", 6380, True, True)
    assert (settings.username, settings.password) == ("app", "p@ss")
    assert "p@ss" not in repr(settings)
    plain = ValkeySettings.from_url("valkey://localhost")
    assert (plain.port, plain.tls, plain.cluster, plain.password) == (6379, False, False, None)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"VALKEY_PORT": "seventy"}, "VALKEY_PORT"),
        ({"VALKEY_PORT": "70000"}, "VALKEY_PORT"),
        ({"VALKEY_TLS": "maybe"}, "VALKEY_TLS"),
        ({"VALKEY_CLUSTER": "2"}, "VALKEY_CLUSTER"),
        ({"VALKEY_AUTH": "kerberos"}, "VALKEY_AUTH"),
        ({"VALKEY_AUTH": "entra", "VALKEY_PASSWORD": "secret"}, "VALKEY_PASSWORD"),
        ({"VALKEY_STREAM_TTL_SECONDS": "0"}, "VALKEY_STREAM_TTL_SECONDS"),
        ({"VALKEY_STREAM_MAXLEN": "-5"}, "VALKEY_STREAM_MAXLEN"),
        ({"VALKEY_READ_BLOCK_MS": "soon"}, "VALKEY_READ_BLOCK_MS"),
        ({"VALKEY_READ_IDLE_TIMEOUT_SECONDS": "-1"}, "VALKEY_READ_IDLE_TIMEOUT_SECONDS"),
        ({"VALKEY_REQUEST_TIMEOUT_MS": "0"}, "VALKEY_REQUEST_TIMEOUT_MS"),
        ({"VALKEY_URL": "http://cache.example"}, "VALKEY_URL"),
        ({"VALKEY_URL": "valkey://:6379"}, "VALKEY_URL"),
        ({"VALKEY_URL": "valkey://host:notaport"}, "VALKEY_URL"),
        ({"VALKEY_URL": "valkey://host?cluster=perhaps"}, "VALKEY_URL"),
    ],
)
def test_bad_settings_raise_an_error_that_names_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ValkeySettings.from_env(environ)


def test_bad_buffer_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_pending_chunks"):
        ValkeyStreamBuffer(ValkeySettings(), max_pending_chunks=0)
    with pytest.raises(ValueError, match="max_batch"):
        ValkeyStreamBuffer(ValkeySettings(), max_batch=0)


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 257, "a@b", "a b", "a{b}", "a*", "../etc", "-leading", "a\nb", "ключ", "a\x00b", "a/b", "a?b", None, 42],
)
def test_unsafe_ids_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidIdError, match="session_id"):
        validate_id(bad, "session_id")


def test_safe_ids_pass_unchanged() -> None:
    for good in ["abc", "A1", "x" * 256, "user.example.com", "9f1c-4e2a.b:c_d"]:
        assert validate_id(good) == good


@given(st.text(max_size=300))
def test_any_id_is_either_rejected_or_cannot_reach_another_key(value: str) -> None:
    try:
        validate_id(value)
    except InvalidIdError:
        return
    assert value and len(value) <= 256 and not set(value) & set("{}*?[]\\ \r\n\t/@")


@pytest.mark.parametrize(
    ("raw", "parsed"), [(None, None), ("", None), ("0", "0-0"), ("0-0", "0-0"), ("1700000000000-3", "1700000000000-3")]
)
def test_cursor_parsing(raw: str | None, parsed: str | None) -> None:
    assert parse_cursor(raw) == parsed


@pytest.mark.parametrize(
    "bad", ["abc", "1-", "-1", "1-2-3", "1700000000000", "$", ">", "+", "99999999999999999999999-0"]
)
def test_malformed_cursors_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidCursorError, match="cursor"):
        parse_cursor(bad)
    assert issubclass(InvalidCursorError, StreamInputError) and issubclass(StreamInputError, ValueError)


@pytest.mark.parametrize(
    "bad",
    [
        "\u0661\u0667\u0660\u0660-\u0660",  # Arabic-Indic digits: "1700-0"
        "1700000000000-\u0663",  # one Arabic-Indic digit after ASCII ones
        "\uff11\uff17\uff10\uff10-\uff10",  # fullwidth digits
        "\u0967-\u0966",  # Devanagari digits
    ],
)
def test_cursors_take_ascii_digits_only(bad: str) -> None:
    # Python's \d and int() accept these; Valkey does not, so they must not pass for an entry id.
    with pytest.raises(InvalidCursorError, match="cursor"):
        parse_cursor(bad)


def _parse_sse(body: str) -> list:  # type: ignore[type-arg]
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())
    return list(EventSource(response).iter_sse())


@given(st.text(alphabet=st.characters(exclude_characters="\r\x00", exclude_categories=["Cs"]), max_size=200))
def test_sse_events_survive_a_real_parser(text: str) -> None:
    body = encode_sse_comment() + encode_sse_event(text, event="message", id="5-1", retry_ms=1500)
    [event] = _parse_sse(body)
    assert (event.event, event.data, event.id, event.retry) == ("message", text, "5-1", 1500)


def test_chunks_become_events_named_by_kind() -> None:
    chunks = [
        StreamChunk("1-0", text="line one\nline two"),
        StreamChunk("1-1", text="Whole answer", kind="replace"),
        StreamChunk("1-2", kind="done"),
        StreamChunk("", kind="replace"),  # the reset before a turn's new run
        StreamChunk("", kind="error", error="timed out"),
    ]
    events = _parse_sse("".join(chunk_to_sse(c) for c in chunks))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("message", "line one\nline two", "1-0"),
        ("replace", "Whole answer", "1-1"),
        ("done", "", "1-2"),
        ("replace", "", "1-2"),  # dispatched with empty data, and no id of its own
        ("error", "timed out", "1-2"),  # no id of its own: the client keeps the last one
    ]


def test_event_fields_cannot_smuggle_lines() -> None:
    [event] = _parse_sse(encode_sse_event("x", event="message\ndata: injected", id="1-0\nevent: error"))
    assert event.data == "x" and event.event == "message data: injected"
