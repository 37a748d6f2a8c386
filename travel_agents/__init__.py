"""The app's agents, the model they use, and the middleware that reports failed turns to stream readers."""

from __future__ import annotations

from agent_framework import Agent

from ._model import DEFAULT_SCRIPTED_CHUNK_DELAY_MS, ModelSettings, create_chat_client
from ._scripted_model import (
    FAIL_MARKER,
    FLAKY_MARKER,
    ScriptedChatClient,
    ScriptedModelError,
    scripted_answer,
    split_into_chunks,
)
from ._tools import estimate_trip_budget, get_destination_weather
from ._travel_agent import TRAVEL_AGENT_INSTRUCTIONS, TRAVEL_AGENT_NAME, create_travel_agent
from ._turn_failures import TURN_OPTION_KEY, StreamTurn, SupportsWriteError, TurnFailureReporter, turn_options


def build_agents(settings: ModelSettings, *, failure_sink: SupportsWriteError) -> list[Agent]:
    """Create every agent the app hosts, sharing one chat client.

    Args:
        settings: Which model to use.
        failure_sink: Where a failed turn's ``error`` entry is written (the app's stream buffer).

    Returns:
        The agents; each becomes a durable entity ``dafx-{name}``.
    """
    client = create_chat_client(settings)
    reporter = TurnFailureReporter(failure_sink)
    return [create_travel_agent(client, middleware=[reporter])]


__all__ = [
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
    "SupportsWriteError",
    "TurnFailureReporter",
    "build_agents",
    "create_chat_client",
    "create_travel_agent",
    "estimate_trip_budget",
    "get_destination_weather",
    "scripted_answer",
    "split_into_chunks",
    "turn_options",
]
