"""The app's HTTP routes (Azure Functions HTTP streaming types): handlers, route templates, turns, input
parsing, stream bodies."""

from __future__ import annotations

from ._errors import RequestError, TurnNotStartedError
from ._event_stream import sse_body, text_body
from ._handlers import CORRELATION_ID_RESPONSE_HEADER, SESSION_ID_RESPONSE_HEADER, AgentHttpApi
from ._responses import json_error, outcome_json
from ._routes import DEFAULT_ROUTE_PREFIX, Routes, route_prefix_from_host_json
from ._run_input import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_MESSAGE_CHARS, RunInput, parse_run_input
from ._settings import RunInputSettings, StreamSettings
from ._sse import chunk_to_sse, encode_sse_comment, encode_sse_event
from ._stream_tokens import StreamGrant, StreamTokenError, StreamTokens
from ._turn_outcome import SupportsEntityClient, TurnOutcome, agent_entity_id, outcome_from_state, read_turn_outcome
from ._turns import NewTurn, Turns

__all__ = [
    "CORRELATION_ID_RESPONSE_HEADER",
    "DEFAULT_ROUTE_PREFIX",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_CHARS",
    "SESSION_ID_RESPONSE_HEADER",
    "AgentHttpApi",
    "NewTurn",
    "RequestError",
    "Routes",
    "RunInput",
    "RunInputSettings",
    "StreamGrant",
    "StreamSettings",
    "StreamTokenError",
    "StreamTokens",
    "SupportsEntityClient",
    "TurnNotStartedError",
    "TurnOutcome",
    "Turns",
    "agent_entity_id",
    "chunk_to_sse",
    "encode_sse_comment",
    "encode_sse_event",
    "json_error",
    "outcome_from_state",
    "outcome_json",
    "parse_run_input",
    "read_turn_outcome",
    "route_prefix_from_host_json",
    "sse_body",
    "text_body",
]
