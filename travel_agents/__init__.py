"""The app's agents, the model they use, and the middleware that traces turns, reports failures and stops turns."""

from __future__ import annotations

from typing import Protocol

from agent_framework import Agent, AgentMiddleware, BaseChatClient, Workflow

# First: stops the import when the installed Agent Framework lacks a private name or behaviour the
# middleware relies on, with a message that names it (see _af_compat).
from . import _af_compat  # noqa: F401
from ._cancelled_marker import (
    CANCELLED_MARKER_TEXT,
    cancelled_marker,
    is_cancelled_marker,
    is_cancelled_response,
    marks_cancelled,
)
from ._model import DEFAULT_SCRIPTED_CHUNK_DELAY_MS, ModelSettings, create_chat_client
from ._scripted_model import (
    FAIL_MARKER,
    FLAKY_MARKER,
    ScriptedChatClient,
    ScriptedModelError,
    scripted_answer,
    split_into_chunks,
)
from ._stream_turn import TURN_OPTION_KEY, StreamTurn, turn_options
from ._tools import estimate_trip_budget, get_destination_weather
from ._travel_agent import TRAVEL_AGENT_INSTRUCTIONS, TRAVEL_AGENT_NAME, create_travel_agent
from ._trip_planner import (
    BUDGET_PLANNER_NAME,
    DEFAULT_MAX_REVISIONS,
    MAX_REVISIONS_SETTING,
    RESEARCHER_NAME,
    TRIP_PLANNER_NAME,
    WRITER_NAME,
    PlanDraft,
    PlanReview,
    build_trip_planner,
    max_revisions_from_env,
)
from ._turn_cancellation import SupportsCancellation, TurnCanceller
from ._turn_failures import SupportsWriteError, TurnFailureReporter
from ._turn_tracing import SupportsTurnTracing, TurnTracing
from ._workflow_hosting import StreamingAgentFunctionApp
from ._workflow_steps import (
    STEP_STARTED_EVENT,
    WORKFLOW_CANCEL_ID,
    SupportsSessionEvents,
    WorkflowStepAnnouncer,
    step_started_event_id,
)


class SupportsTurnControl(
    SupportsWriteError, SupportsCancellation, SupportsTurnTracing, SupportsSessionEvents, Protocol
):
    """What the agents' middleware needs from the app's stream buffer (``ValkeyStreamBuffer`` has it)."""


def _middleware(buffer: SupportsTurnControl) -> list[AgentMiddleware]:
    # The tracing middleware goes first (outermost): everything the others do runs in the turn's trace.
    # A workflow step is announced before the canceller may skip it, so its lane opens either way.
    return [TurnTracing(buffer), TurnFailureReporter(buffer), WorkflowStepAnnouncer(buffer), TurnCanceller(buffer)]


def build_agents(chat_client: BaseChatClient, *, buffer: SupportsTurnControl) -> list[Agent]:
    """Create every agent the app hosts.

    Args:
        chat_client: The model the agents talk to (``create_chat_client``), one for the whole app.
        buffer: The app's stream buffer: a failed turn's ``error`` entry is written to it, the
            turns' cancel requests are read from it, and it is told which trace each turn's stream
            belongs to.

    Returns:
        The agents; each becomes a durable entity ``dafx-{name}``.
    """
    return [create_travel_agent(chat_client, middleware=_middleware(buffer))]


def build_workflows(
    chat_client: BaseChatClient, *, buffer: SupportsTurnControl, max_revisions: int | None = None
) -> list[Workflow]:
    """Create every workflow the app hosts (``trip_planner``), its agents with the same middleware as ``build_agents``.

    Args:
        chat_client: The model the workflows' agents talk to (the one ``build_agents`` gets).
        buffer: The app's stream buffer (see ``build_agents``); a workflow step also announces itself there.
        max_revisions: How many times ``trip_planner`` rewrites a rejected draft; by default the app
            setting ``TRIP_PLANNER_MAX_REVISIONS`` (3 when unset).

    Returns:
        The workflows; each becomes the orchestration ``dafx-{name}``.

    Raises:
        ValueError: If ``TRIP_PLANNER_MAX_REVISIONS`` is not a whole number from 0 to 20.
    """
    revisions = max_revisions_from_env() if max_revisions is None else max_revisions
    return [build_trip_planner(chat_client, middleware=_middleware(buffer), max_revisions=revisions)]


__all__ = [
    "BUDGET_PLANNER_NAME",
    "CANCELLED_MARKER_TEXT",
    "DEFAULT_MAX_REVISIONS",
    "DEFAULT_SCRIPTED_CHUNK_DELAY_MS",
    "FAIL_MARKER",
    "FLAKY_MARKER",
    "MAX_REVISIONS_SETTING",
    "RESEARCHER_NAME",
    "STEP_STARTED_EVENT",
    "TRAVEL_AGENT_INSTRUCTIONS",
    "TRAVEL_AGENT_NAME",
    "TRIP_PLANNER_NAME",
    "TURN_OPTION_KEY",
    "WORKFLOW_CANCEL_ID",
    "WRITER_NAME",
    "ModelSettings",
    "PlanDraft",
    "PlanReview",
    "ScriptedChatClient",
    "ScriptedModelError",
    "StreamTurn",
    "StreamingAgentFunctionApp",
    "SupportsCancellation",
    "SupportsSessionEvents",
    "SupportsTurnControl",
    "SupportsTurnTracing",
    "SupportsWriteError",
    "TurnCanceller",
    "TurnFailureReporter",
    "TurnTracing",
    "WorkflowStepAnnouncer",
    "build_agents",
    "build_trip_planner",
    "build_workflows",
    "cancelled_marker",
    "create_chat_client",
    "create_travel_agent",
    "estimate_trip_budget",
    "get_destination_weather",
    "is_cancelled_marker",
    "is_cancelled_response",
    "marks_cancelled",
    "max_revisions_from_env",
    "scripted_answer",
    "split_into_chunks",
    "step_started_event_id",
    "turn_options",
]
