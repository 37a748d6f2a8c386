"""The committed outcome of a turn, read from the agent entity's durable state."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import azure.durable_functions as df
from agent_framework_durabletask import (
    AgentSessionId,
    DurableAgentState,
    DurableAgentStateErrorContent,
    DurableAgentStateFunctionCallContent,
    DurableAgentStateFunctionResultContent,
    DurableAgentStateRequest,
    DurableAgentStateResponse,
)

from travel_agents import marks_cancelled
from valkey_buffer import TOOL_RESULT_MAX_CHARS, TurnOutcome, TurnStatus, result_text

logger = logging.getLogger(__name__)


class SupportsEntityClient(Protocol):
    """The two durable client calls this app makes (a small surface a local host can provide)."""

    async def signal_entity(self, entity_id: df.EntityId, operation_name: str, operation_input: Any = None, /) -> None:
        """Signal an entity operation."""
        ...

    async def read_entity_state(self, entity_id: df.EntityId, /) -> Any:
        """Read an entity's state: an object with ``entity_exists`` and ``entity_state``."""
        ...


def agent_entity_id(agent_name: str, session_id: str) -> df.EntityId:
    """The durable entity that runs ``agent_name`` for ``session_id``: ``dafx-{name}`` keyed by the session."""
    return df.EntityId(name=AgentSessionId.to_entity_name(agent_name), key=session_id)


async def read_turn_outcome(
    client: SupportsEntityClient, agent_name: str, session_id: str, correlation_id: str
) -> TurnOutcome:
    """Read the committed outcome of turn ``correlation_id`` from the entity state.

    Args:
        client: The durable client.
        agent_name: The agent.
        session_id: The session (entity key).
        correlation_id: The turn.

    Returns:
        The outcome; ``not_found`` when the entity or the request is not there (yet).
    """
    state_response = await client.read_entity_state(agent_entity_id(agent_name, session_id))
    if not state_response or not state_response.entity_exists or not isinstance(state_response.entity_state, dict):
        return TurnOutcome(status="not_found")
    state = DurableAgentState.from_dict(state_response.entity_state)
    return outcome_from_state(state, correlation_id)


def outcome_from_state(state: DurableAgentState, correlation_id: str) -> TurnOutcome:
    """Find turn ``correlation_id`` in a session's conversation history."""
    history = state.data.conversation_history
    requested = False
    for entry in history:
        if entry.correlation_id != correlation_id:
            continue
        if isinstance(entry, DurableAgentStateResponse):
            # The entity marks failures with error content: its is_error flag is not persisted.
            errors = [
                content
                for message in entry.messages
                for content in message.contents
                if isinstance(content, DurableAgentStateErrorContent)
            ]
            if errors:
                error = "; ".join(
                    f"{content.error_code}: {content.message}" if content.error_code else (content.message or "error")
                    for content in errors
                )
                return TurnOutcome(status="failed", error=error, message_count=len(history))
            text = "".join(message.text for message in entry.messages)
            status: TurnStatus = "cancelled" if marks_cancelled(entry.messages) else "completed"
            return TurnOutcome(status=status, text=text, message_count=len(history))
        if isinstance(entry, DurableAgentStateRequest):
            requested = True
    return TurnOutcome(status="pending" if requested else "not_found", message_count=len(history))


@dataclass(frozen=True)
class SessionTurn:
    """One turn of a session as its history shows it.

    Attributes:
        correlation_id: The turn.
        message: The user's message (``None`` when it is not known: a running turn whose record expired).
        outcome: Its outcome: ``pending`` while it runs or waits, else the committed one.
    """

    correlation_id: str
    message: str | None
    outcome: TurnOutcome
    tool_calls: tuple[dict[str, Any], ...] = ()


def committed_tool_calls(state: DurableAgentState, correlation_id: str) -> tuple[dict[str, Any], ...]:
    """The tool calls of a committed turn, in order: ``call_id``, ``name``, ``arguments`` and ``result``.

    The result is cut at ``TOOL_RESULT_MAX_CHARS``, as in the stream.
    """
    calls: dict[str, dict[str, Any]] = {}
    for entry in state.data.conversation_history:
        if entry.correlation_id != correlation_id or not isinstance(entry, DurableAgentStateResponse):
            continue
        for message in entry.messages:
            for content in message.contents:
                if isinstance(content, DurableAgentStateFunctionCallContent):
                    calls[content.call_id] = {
                        "call_id": content.call_id,
                        "name": content.name,
                        "arguments": content.arguments,
                        "result": None,
                    }
                elif isinstance(content, DurableAgentStateFunctionResultContent) and content.call_id in calls:
                    calls[content.call_id]["result"] = result_text(content)[:TOOL_RESULT_MAX_CHARS]
    return tuple(calls.values())


async def read_session_turns(
    client: SupportsEntityClient, agent_name: str, session_id: str
) -> list[SessionTurn] | None:
    """The turns in a session's entity state, in order; ``None`` when the entity does not exist.

    Args:
        client: The durable client.
        agent_name: The agent.
        session_id: The session (entity key).
    """
    state_response = await client.read_entity_state(agent_entity_id(agent_name, session_id))
    if not state_response or not state_response.entity_exists or not isinstance(state_response.entity_state, dict):
        return None
    state = DurableAgentState.from_dict(state_response.entity_state)
    turns: list[SessionTurn] = []
    for entry in state.data.conversation_history:
        if isinstance(entry, DurableAgentStateRequest) and entry.correlation_id:
            message = "".join(m.text for m in entry.messages)
            outcome = outcome_from_state(state, entry.correlation_id)
            calls = committed_tool_calls(state, entry.correlation_id) if outcome.is_committed else ()
            turns.append(
                SessionTurn(correlation_id=entry.correlation_id, message=message, outcome=outcome, tool_calls=calls)
            )
    return turns
