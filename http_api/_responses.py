"""JSON response helpers: every error the API returns is ``{"error": "..."}``."""

from __future__ import annotations

from typing import Any

from azurefunctions.extensions.http.fastapi import JSONResponse


class RequestError(Exception):
    """A request the API refuses; becomes a JSON error response with ``status_code``."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        """Create the error.

        Args:
            message: What is wrong, for the client.
            status_code: The HTTP status, a 4xx for client mistakes.
        """
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def json_error(message: str, status_code: int = 400, **extra: Any) -> JSONResponse:
    """Return ``{"error": message, **extra}`` with ``status_code``."""
    return JSONResponse({"error": message, **extra}, status_code=status_code)
