"""What the routes answer besides streams: errors as ``{"error": "..."}`` (one mapping from the errors the
handlers raise to responses, as Starlette's exception handlers do) and a turn's outcome as JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azurefunctions.extensions.http.fastapi import JSONResponse

from valkey_buffer import StreamInputError, ValkeyUnavailableError

from ._errors import RequestError, TurnNotStartedError
from ._stream_tokens import StreamTokenError
from ._turn_outcome import TurnOutcome


def json_error(message: str, status_code: int = 400, **extra: Any) -> JSONResponse:
    """Return ``{"error": message, **extra}`` with ``status_code``."""
    return JSONResponse({"error": message, **extra}, status_code=status_code)


# Looked up along the error's class hierarchy, nearest class first: a StreamTokenError is also a
# StreamInputError, and its 401 wins. StreamInputError covers bad ids and cursors (InvalidCursorError):
# input that can never be served. Valkey's and the durable backend's outages are 503s the client may retry.
_ERROR_RESPONSES: dict[type[Exception], Callable[[Any], JSONResponse]] = {
    RequestError: lambda error: json_error(error.message, error.status_code, **error.extra),
    StreamInputError: lambda error: json_error(str(error), 400),
    StreamTokenError: lambda error: json_error(str(error), 401),
    ValkeyUnavailableError: lambda _: json_error("Valkey is unavailable; try again shortly.", 503),
    TurnNotStartedError: lambda error: json_error(str(error), 503),
}

ANSWERED_ERRORS: tuple[type[Exception], ...] = tuple(_ERROR_RESPONSES)
"""The errors a route handler may raise to answer the request with an error response."""


def error_response(error: Exception) -> JSONResponse:
    """The JSON error response for one of :data:`ANSWERED_ERRORS`.

    Raises:
        Exception: ``error`` itself when no response is mapped to it.
    """
    for kind in type(error).__mro__:
        respond = _ERROR_RESPONSES.get(kind)
        if respond is not None:
            return respond(error)
    raise error


def outcome_json(outcome: TurnOutcome, *, message_count: bool = True) -> dict[str, Any]:
    """A turn's outcome as the routes answer it: ``status``, ``message_count`` (unless left out), and
    ``response`` for a completed or cancelled turn (the partial answer) or ``error`` for a failed one."""
    body: dict[str, Any] = {"status": outcome.status}
    if message_count:
        body["message_count"] = outcome.message_count
    if outcome.status in ("completed", "cancelled"):
        body["response"] = outcome.text
    elif outcome.status == "failed":
        body["error"] = outcome.error
    return body
