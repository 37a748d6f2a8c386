"""Validation of the ids that become parts of Valkey keys, and of stream cursors."""

from __future__ import annotations

import re

from ._errors import InvalidCursorError, InvalidIdError

MAX_ID_LENGTH = 256
STREAM_KEY_PREFIX = "agent-stream:"
TURNS_KEY_PREFIX = "agent-turns:"

# Letters, digits and a few separators: no braces (cluster hash tags), no glob characters, no
# whitespace or control characters, nothing that could make a key name collide with another's.
# No "@" either: a session id is also a durable entity key, and "@" separates an entity id's parts.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
# ASCII digits only: ``\d`` and ``int()`` also take other scripts' digits (Arabic-Indic, fullwidth...),
# which Valkey refuses as an entry id.
_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_UINT64 = 2**64 - 1


def validate_id(value: object, name: str = "session_id") -> str:
    """Return ``value`` if it is safe to use as (part of) a Valkey key.

    Args:
        value: The id to check.
        name: The name of the id, used in the error message.

    Returns:
        The id, unchanged.

    Raises:
        InvalidIdError: If the id is not a string, is empty, longer than 256 characters or has a
            character outside letters, digits and ``. _ : -`` (or starts with a separator).
    """
    if not isinstance(value, str) or not value:
        raise InvalidIdError(f"{name} is required and must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{name} must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if not _SAFE_ID.fullmatch(value):
        raise InvalidIdError(
            f"{name} may only contain letters, digits and . _ : - and must start with a letter or digit"
        )
    return value


def parse_cursor(value: str | None) -> str | None:
    """Validate a cursor or ``Last-Event-ID`` value.

    Args:
        value: ``None`` or an empty string for "no cursor", ``0`` or ``0-0`` for "from the start",
            otherwise a Valkey entry id ``<ms>-<seq>`` (ASCII digits).

    Returns:
        ``None`` when no cursor was given, otherwise the entry id to read after.

    Raises:
        InvalidCursorError: If the value is not an entry id.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value in ("0", "0-0"):
        return "0-0"
    match = _ENTRY_ID.fullmatch(value)
    if match is None or int(match.group(1)) > _MAX_UINT64 or int(match.group(2)) > _MAX_UINT64:
        raise InvalidCursorError("cursor must be a stream entry id like 1700000000000-0 (or 0 for the start)")
    return value


def stream_key(session_id: str) -> str:
    """The Valkey key of a session's stream (the reference samples' schema)."""
    return STREAM_KEY_PREFIX + validate_id(session_id, "session_id")


def turns_key(session_id: str) -> str:
    """The Valkey key of a session's accepted-turn records (a hash: correlation id -> record)."""
    return TURNS_KEY_PREFIX + validate_id(session_id, "session_id")


def entry_order(entry_id: str) -> tuple[int, int]:
    """Split an entry id into its numeric parts, for ordering comparisons."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


LAST_POSSIBLE_ENTRY_ID = f"{_MAX_UINT64}-{_MAX_UINT64}"
"""No entry can follow this id: a reader positioned there has nothing to read."""
