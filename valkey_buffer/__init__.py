"""Resumable agent response streaming on Valkey Streams, built on valkey-glide.

A reusable package with no Azure Functions imports: register ``ValkeyStreamBuffer`` as a durable
agent's response callback and read the streams back as ``StreamChunk``s, live or resumed.
"""

from ._buffer import AcceptedTurn, ReaderStats, ValkeyStreamBuffer
from ._cancellation import (
    CANCEL_CHECK_SECONDS,
    CANCELLED_MARKER_TEXT,
    TurnCancellation,
    cancel_key,
    cancelled_marker,
    is_cancelled_marker,
    marks_cancelled,
)
from ._chunk import StreamChunk
from ._connection import EntraTokenSource
from ._errors import InvalidCursorError, InvalidIdError, StreamInputError, ValkeyUnavailableError
from ._ids import parse_cursor, stream_key, validate_id
from ._settings import ValkeySettings
from ._sse import chunk_to_sse, encode_sse_comment, encode_sse_event
from ._stream_reader import CommittedTurn, CommittedTurnLookup
from ._stream_tokens import StreamGrant, StreamTokenError, StreamTokens
from ._turn_writer import WriteStats

__all__ = [
    "CANCELLED_MARKER_TEXT",
    "CANCEL_CHECK_SECONDS",
    "AcceptedTurn",
    "CommittedTurn",
    "CommittedTurnLookup",
    "EntraTokenSource",
    "InvalidCursorError",
    "InvalidIdError",
    "ReaderStats",
    "StreamChunk",
    "StreamGrant",
    "StreamInputError",
    "StreamTokenError",
    "StreamTokens",
    "TurnCancellation",
    "ValkeySettings",
    "ValkeyStreamBuffer",
    "ValkeyUnavailableError",
    "WriteStats",
    "cancel_key",
    "cancelled_marker",
    "chunk_to_sse",
    "encode_sse_comment",
    "encode_sse_event",
    "is_cancelled_marker",
    "marks_cancelled",
    "parse_cursor",
    "stream_key",
    "validate_id",
]
