"""Parsing of a "start a turn" request, with the built-in agent route's field names and precedence."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_framework_durabletask import (
    LEGACY_THREAD_ID_FIELD,
    SESSION_ID_FIELD,
    SESSION_ID_HEADER,
    WAIT_FOR_RESPONSE_FIELD,
    WAIT_FOR_RESPONSE_HEADER,
)
from azurefunctions.extensions.http.fastapi import Request

from valkey_buffer import InvalidIdError, validate_id

from ._errors import RequestError
from ._settings import RunInputSettings

MAX_MESSAGE_CHARS = 32_000
MAX_BODY_BYTES = 256 * 1024
# A run body is a flat object; a little room for clients that send nested extras, no more. Deeper
# bodies are refused before parsing (the JSON decoder would hit the recursion limit).
MAX_JSON_DEPTH = 32
# Strings (skipped whole, escaped quotes included) and the brackets outside them.
_JSON_STRING_OR_BRACKET = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


@dataclass(frozen=True)
class RunInput:
    """A validated request to start a turn.

    Attributes:
        message: The user's message (not empty).
        session_id: The session (entity key) to continue, or ``None`` for a new one.
        wait_for_response: Whether the caller wants the committed answer instead of a 202.
        role: The message's role, ``user``, or ``system`` when the app allows it.
        enable_tool_calls: Whether the agent may call its tools for this turn.
        is_json: Whether the body was JSON (kept in the run request's ``request_response_format``).
    """

    message: str
    session_id: str | None
    wait_for_response: bool
    role: str = "user"
    enable_tool_calls: bool = True
    is_json: bool = True


async def parse_run_input(req: Request, settings: RunInputSettings) -> RunInput:
    """Read the message and options of a run or stream request.

    The body is JSON ``{"message": ..., "session_id": ..., "wait_for_response": ..., "role": ...,
    "enable_tool_calls": ...}`` (``Content-Type: application/json`` or ``*+json``) or plain text, the
    message itself. The session id may also come from the ``session_id`` query value or the
    ``x-ms-session-id`` header (``thread_id`` is accepted as the older name); a given id must be
    valid (an empty one too is refused) and different values are refused. ``wait_for_response``
    comes from the ``x-ms-wait-for-response`` header, the query, or the body, in that order, as for
    the built-in route; it defaults to false here. ``role`` is ``user`` unless the settings allow
    ``system``.

    The body is read at most up to ``MAX_BODY_BYTES``: a larger ``Content-Length`` is refused before
    any of it is read, and a body without one (chunked) is refused as soon as it passes the limit.

    Args:
        req: The HTTP request.
        settings: What a client may ask for (``ALLOW_SYSTEM_ROLE_MESSAGES``).

    Returns:
        The validated input.

    Raises:
        RequestError: With status 400 for a malformed body (invalid or too deeply nested JSON, text
            that is not valid Unicode), an empty message, a refused role, a bad id or conflicting
            ids, and 413 for a body or message that is too large.
    """
    raw = await _read_body(req)
    is_json = _is_json(req.headers.get("content-type", ""))
    body: dict[str, Any] = {}
    if is_json:
        body = _json_object(raw)
        message_value = body.get("message")
        if message_value is not None and not isinstance(message_value, str):
            raise RequestError("'message' must be a string.")
        message = (message_value or "").strip()
        if not _is_unicode_text(message):
            # JSON escapes can spell lone surrogates ("\ud800"), which no UTF-8 encoder downstream takes.
            raise RequestError("'message' must be valid Unicode text.")
    else:
        try:
            message = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise RequestError("The request body must be UTF-8 text or JSON.") from None
    if not message:
        raise RequestError("Message is required.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise RequestError(f"The message is longer than {MAX_MESSAGE_CHARS} characters.", 413)

    role = _role(body.get("role"), settings)
    enable_tool_calls = _bool_or_none(body.get("enable_tool_calls"))

    return RunInput(
        message=message,
        session_id=_session_id(req, body),
        wait_for_response=_wait_for_response(req, body),
        role=role,
        enable_tool_calls=True if enable_tool_calls is None else enable_tool_calls,
        is_json=is_json,
    )


async def _read_body(req: Request) -> bytes:
    """The body, read no further than the limit: a client cannot make the app buffer more."""
    too_large = RequestError(f"The request body is larger than {MAX_BODY_BYTES} bytes.", 413)
    declared = req.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for part in req.stream():
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise too_large
        parts.append(part)
    return b"".join(parts)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _json_object(raw: bytes) -> dict[str, Any]:
    if _nesting_exceeds(raw, MAX_JSON_DEPTH):
        raise RequestError(f"Invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep.")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("Invalid JSON.") from None
    if not isinstance(value, dict):
        raise RequestError("Invalid JSON payload. Expected an object.")
    return value


def _nesting_exceeds(raw: bytes, limit: int) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the usual body: too few brackets to nest that deep, no scan needed
    depth = 0
    for token in _JSON_STRING_OR_BRACKET.finditer(raw):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket in (b"]", b"}"):
            depth -= 1
    return False


def _is_unicode_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _role(value: Any, settings: RunInputSettings) -> str:
    if value is None:
        return "user"
    if not isinstance(value, str):
        raise RequestError("'role' must be a string.")
    # Normalised as RunRequest normalises it, so that "System" cannot pass for something else.
    role = value.strip().lower() or "user"
    if role == "system" and not settings.allow_system_role_messages:
        raise RequestError("'role' system is not accepted by this app (ALLOW_SYSTEM_ROLE_MESSAGES is off).")
    if role not in ("user", "system"):
        raise RequestError("'role' must be user or system.")
    return role


def _session_id(req: Request, body: Mapping[str, Any]) -> str | None:
    candidates: dict[str, str] = {}
    sources: list[tuple[str, Mapping[str, Any], tuple[str, ...]]] = [
        ("request body", body, (SESSION_ID_FIELD, LEGACY_THREAD_ID_FIELD)),
        ("query string", req.query_params, (SESSION_ID_FIELD, LEGACY_THREAD_ID_FIELD)),
        ("header", req.headers, (SESSION_ID_HEADER,)),
    ]
    for source_name, source, names in sources:
        for name in names:
            value = source.get(name)
            if value is None:
                continue
            # A session id that is given must be valid: an empty or blank one is refused rather than
            # silently starting a new session the caller did not ask for.
            try:
                candidates[f"{name} in the {source_name}"] = validate_id(value, "session_id")
            except InvalidIdError as error:
                raise RequestError(f"{error} ({name} in the {source_name})") from None
    distinct = set(candidates.values())
    if len(distinct) > 1:
        listed = ", ".join(f"{where}={value!r}" for where, value in sorted(candidates.items()))
        raise RequestError(f"Conflicting session identifiers supplied: {listed}")
    return distinct.pop() if distinct else None


def _wait_for_response(req: Request, body: Mapping[str, Any]) -> bool:
    for value in (
        req.headers.get(WAIT_FOR_RESPONSE_HEADER),
        req.query_params.get(WAIT_FOR_RESPONSE_FIELD),
        body.get(WAIT_FOR_RESPONSE_FIELD),
    ):
        parsed = _bool_or_none(value)
        if parsed is not None:
            return parsed
    return False


def _bool_or_none(value: Any) -> bool | None:
    """Read a boolean the way the built-in route does; unrecognised values count as absent."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        normalized = value.strip().lower()
        if normalized in _TRUE:
            return True
        if normalized in _FALSE:
            return False
    return None
