"""The app's HTTP routes (Azure Functions HTTP streaming types): handlers, route templates, turns, input
parsing, stream bodies, and the hosted workflows' routes and instance streams."""

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
from ._workflow_handlers import WorkflowHttpApi
from ._workflow_instances import SupportsWorkflowClient, WorkflowInstances, fitting
from ._workflow_status import (
    WORKFLOW_ENDS,
    PendingRequest,
    WorkflowStatus,
    is_workflow_end,
    record_status,
    workflow_status_of,
)
from ._workflow_steps import WorkflowStep, workflow_steps
from ._workflow_stream import WorkflowStreams, event_data, workflow_chunk_to_sse, workflow_event

__all__ = [
    "CORRELATION_ID_RESPONSE_HEADER",
    "DEFAULT_ROUTE_PREFIX",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_CHARS",
    "SESSION_ID_RESPONSE_HEADER",
    "WORKFLOW_ENDS",
    "AgentHttpApi",
    "NewTurn",
    "PendingRequest",
    "RequestError",
    "Routes",
    "RunInput",
    "RunInputSettings",
    "StreamGrant",
    "StreamSettings",
    "StreamTokenError",
    "StreamTokens",
    "SupportsEntityClient",
    "SupportsWorkflowClient",
    "TurnNotStartedError",
    "TurnOutcome",
    "Turns",
    "WorkflowHttpApi",
    "WorkflowInstances",
    "WorkflowStatus",
    "WorkflowStep",
    "WorkflowStreams",
    "agent_entity_id",
    "chunk_to_sse",
    "encode_sse_comment",
    "encode_sse_event",
    "event_data",
    "fitting",
    "is_workflow_end",
    "json_error",
    "outcome_from_state",
    "outcome_json",
    "parse_run_input",
    "read_turn_outcome",
    "record_status",
    "route_prefix_from_host_json",
    "sse_body",
    "text_body",
    "workflow_chunk_to_sse",
    "workflow_event",
    "workflow_status_of",
    "workflow_steps",
]
