"""The example agent: a travel planner with two deterministic tools. Clone this file for your own agents."""

from __future__ import annotations

from collections.abc import Sequence

from agent_framework import Agent, AgentMiddleware, BaseChatClient

from ._tools import estimate_trip_budget, get_destination_weather

TRAVEL_AGENT_NAME = "TravelAgent"

TRAVEL_AGENT_INSTRUCTIONS = """\
You are a friendly travel planner. Given a destination and dates, propose a short day-by-day plan.
Use get_destination_weather to check the typical weather before suggesting outdoor activities, and
estimate_trip_budget when the user mentions a budget, the number of nights or travellers.
Answer in a few short paragraphs of plain text."""


def create_travel_agent(client: BaseChatClient, *, middleware: Sequence[AgentMiddleware] = ()) -> Agent:
    """Create the travel planner agent.

    Args:
        client: The chat client (Azure OpenAI or the scripted model).
        middleware: Agent middleware to wrap every run with (e.g. the turn failure reporter).

    Returns:
        The agent, named ``TravelAgent``; its durable entity is ``dafx-TravelAgent``.
    """
    return Agent(
        client=client,
        name=TRAVEL_AGENT_NAME,
        description="Plans short city trips: day-by-day plan, typical weather and a rough budget.",
        instructions=TRAVEL_AGENT_INSTRUCTIONS,
        tools=[get_destination_weather, estimate_trip_budget],
        middleware=list(middleware),
    )
