"""Resumable agent response streaming on Valkey Streams, built on valkey-glide.

A reusable package with no Azure Functions imports: register ``ValkeyStreamBuffer`` as a durable
agent's response callback and read the streams back as ``StreamChunk``s, live or resumed.
"""

from ._accepted_turns import AcceptedTurn
from ._buffer import ValkeyStreamBuffer
from ._cancel_watch import CANCEL_CHECK_SECONDS, CancelWatch, cancel_key
from ._chunk import TOOL_RESULT_MAX_CHARS, StreamChunk
from ._collector import tune_collector
from ._connection import EntraTokenSource
from ._errors import InvalidCursorError, InvalidIdError, StreamInputError, ValkeyUnavailableError
from ._ids import parse_cursor, stream_key, validate_id
from ._live_feed import ReaderStats
from ._session_reader import QuietHook, SessionEnd
from ._settings import ValkeySettings, parse_flag
from ._telemetry import current_trace_headers, trace_context_from_headers
from ._tool_contents import result_text
from ._turn_outcome import CommittedTurnLookup, TurnOutcome, TurnStatus
from ._turn_writer import WriteStats

__all__ = [
    "CANCEL_CHECK_SECONDS",
    "TOOL_RESULT_MAX_CHARS",
    "AcceptedTurn",
    "CancelWatch",
    "CommittedTurnLookup",
    "EntraTokenSource",
    "InvalidCursorError",
    "InvalidIdError",
    "QuietHook",
    "ReaderStats",
    "SessionEnd",
    "StreamChunk",
    "StreamInputError",
    "TurnOutcome",
    "TurnStatus",
    "ValkeySettings",
    "ValkeyStreamBuffer",
    "ValkeyUnavailableError",
    "WriteStats",
    "cancel_key",
    "current_trace_headers",
    "parse_cursor",
    "parse_flag",
    "result_text",
    "stream_key",
    "trace_context_from_headers",
    "tune_collector",
    "validate_id",
]
