"""Resumable agent response streaming on Valkey Streams, built on valkey-glide.

A reusable package with no Azure Functions imports: register ``ValkeyStreamBuffer`` as a durable
agent's response callback and read the streams back as ``StreamChunk``s, live or resumed.
"""

from ._accepted_turns import AcceptedTurn
from ._buffer import ValkeyStreamBuffer
from ._cancellation import CANCEL_CHECK_SECONDS, TurnCancellation, cancel_key
from ._chunk import StreamChunk
from ._connection import EntraTokenSource
from ._errors import InvalidCursorError, InvalidIdError, StreamInputError, ValkeyUnavailableError
from ._ids import parse_cursor, stream_key, validate_id
from ._live_feed import ReaderStats
from ._settings import ValkeySettings
from ._stream_reader import CommittedTurn, CommittedTurnLookup
from ._turn_writer import WriteStats

__all__ = [
    "CANCEL_CHECK_SECONDS",
    "AcceptedTurn",
    "CommittedTurn",
    "CommittedTurnLookup",
    "EntraTokenSource",
    "InvalidCursorError",
    "InvalidIdError",
    "ReaderStats",
    "StreamChunk",
    "StreamInputError",
    "TurnCancellation",
    "ValkeySettings",
    "ValkeyStreamBuffer",
    "ValkeyUnavailableError",
    "WriteStats",
    "cancel_key",
    "parse_cursor",
    "stream_key",
    "validate_id",
]
