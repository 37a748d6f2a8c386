"""Errors raised by valkey_buffer that callers are expected to handle."""

from __future__ import annotations


class StreamInputError(ValueError):
    """Client input that can never be served (an HTTP layer answers it with 400)."""


class InvalidIdError(StreamInputError):
    """A session or correlation id that is empty, too long or has unsafe characters."""


class InvalidCursorError(StreamInputError):
    """A cursor or ``Last-Event-ID`` that is not a Valkey stream entry id."""


class ValkeyUnavailableError(RuntimeError):
    """Valkey could not be reached (an HTTP layer answers it with 503)."""
