"""The errors a route handler raises to refuse a request; ``_responses.error_response`` answers them."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A request the API refuses; becomes a JSON error response with ``status_code``."""

    def __init__(self, message: str, status_code: int = 400, **extra: Any) -> None:
        """Create the error.

        Args:
            message: What is wrong, for the client.
            status_code: The HTTP status, a 4xx for client mistakes.
            **extra: More fields of the error body (``agent``, ``session_id``...).
        """
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.extra = extra


class TurnNotStartedError(RuntimeError):
    """The durable client could not signal the agent entity (answered with 503)."""
