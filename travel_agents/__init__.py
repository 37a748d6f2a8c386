"""The app's agents, the model they use, and the middleware that traces turns, reports failures and stops turns."""

from __future__ import annotations

from typing import Protocol

from agent_framework import Agent

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
from ._turn_cancellation import SupportsCancellation, TurnCanceller
from ._turn_failures import SupportsWriteError, TurnFailureReporter
from ._turn_tracing import SupportsTurnTracing, TurnTracing


class SupportsTurnControl(SupportsWriteError, SupportsCancellation, SupportsTurnTracing, Protocol):
    """What the agents' middleware needs from the app's stream buffer (``ValkeyStreamBuffer`` has it)."""


def build_agents(settings: ModelSettings, *, buffer: SupportsTurnControl) -> list[Agent]:
    """Create every agent the app hosts, sharing one chat client.

    Args:
        settings: Which model to use.
        buffer: The app's stream buffer: a failed turn's ``error`` entry is written to it, the
            turns' cancel requests are read from it, and it is told which trace each turn's stream
            belongs to.

    Returns:
        The agents; each becomes a durable entity ``dafx-{name}``.
    """
    client = create_chat_client(settings)
    # The tracing middleware goes first (outermost): everything the others do runs in the turn's trace.
    middleware = [TurnTracing(buffer), TurnFailureReporter(buffer), TurnCanceller(buffer)]
    return [create_travel_agent(client, middleware=middleware)]


__all__ = [
    "CANCELLED_MARKER_TEXT",
    "DEFAULT_SCRIPTED_CHUNK_DELAY_MS",
    "FAIL_MARKER",
    "FLAKY_MARKER",
    "TRAVEL_AGENT_INSTRUCTIONS",
    "TRAVEL_AGENT_NAME",
    "TURN_OPTION_KEY",
    "ModelSettings",
    "ScriptedChatClient",
    "ScriptedModelError",
    "StreamTurn",
    "SupportsCancellation",
    "SupportsTurnControl",
    "SupportsTurnTracing",
    "SupportsWriteError",
    "TurnCanceller",
    "TurnFailureReporter",
    "TurnTracing",
    "build_agents",
    "cancelled_marker",
    "create_chat_client",
    "create_travel_agent",
    "estimate_trip_budget",
    "get_destination_weather",
    "is_cancelled_marker",
    "is_cancelled_response",
    "marks_cancelled",
    "scripted_answer",
    "split_into_chunks",
    "turn_options",
]
