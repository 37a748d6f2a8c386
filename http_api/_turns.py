"""A turn's life apart from HTTP: start it, read or wait for its outcome, cancel it, list a session's turns.

A turn is accepted in Valkey (its record lets the routes say ``pending`` before the entity has seen
it) and run by the agent's durable entity, whose state holds the committed outcome. The durable
client is given per call: each Functions invocation gets its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agent_framework_durabletask import REQUEST_RESPONSE_FORMAT_JSON, REQUEST_RESPONSE_FORMAT_TEXT, RunRequest

from travel_agents import turn_options
from valkey_buffer import CommittedTurnLookup, ValkeyStreamBuffer, ValkeyUnavailableError, current_trace_headers

from ._errors import TurnNotStartedError
from ._run_input import RunInput
from ._telemetry import note_turn
from ._turn_outcome import (
    SessionTurn,
    SupportsEntityClient,
    TurnOutcome,
    agent_entity_id,
    read_session_turns,
    read_turn_outcome,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewTurn:
    """A turn about to be started.

    Attributes:
        agent: The registered agent that runs it.
        session_id: Its session: the one asked for, or a new one.
        correlation_id: The turn.
        run_input: What the request asked.
    """

    agent: str
    session_id: str
    correlation_id: str
    run_input: RunInput


class Turns:
    """The turns of the registered agents, over the buffer and the agents' durable entities.

    Args:
        buffer: The stream buffer (accepted turns, cancel requests).
        agent_names: The registered agents' names.
        poll_interval_seconds: Delay between entity state reads while waiting for an outcome.
        max_poll_retries: Entity state reads before :meth:`wait` gives up.

    Raises:
        ValueError: If no agent is given or a polling value is out of range.
    """

    def __init__(
        self,
        *,
        buffer: ValkeyStreamBuffer,
        agent_names: Sequence[str],
        poll_interval_seconds: float = 1.0,
        max_poll_retries: int = 30,
    ) -> None:
        if not agent_names:
            raise ValueError("agent_names must name at least one agent.")
        if poll_interval_seconds <= 0:
            raise ValueError("poll_interval_seconds must be positive.")
        if max_poll_retries < 1:
            raise ValueError("max_poll_retries must be at least 1.")
        self.buffer = buffer
        self.poll_interval_seconds = poll_interval_seconds
        self.max_poll_retries = max_poll_retries
        # Functions routes match case-insensitively; so does the agent name here.
        self._agents = {name.casefold(): name for name in agent_names}

    @property
    def agent_names(self) -> list[str]:
        """The registered agents' names."""
        return list(self._agents.values())

    def agent_named(self, name: object) -> str | None:
        """The registered agent called ``name`` in any case, or ``None``."""
        return self._agents.get(name.casefold()) if isinstance(name, str) else None

    def new(self, agent: str, run_input: RunInput) -> NewTurn:
        """The ids of a turn ``run_input`` asks for: its session's (a new session unless one is named) and its own."""
        return NewTurn(agent, run_input.session_id or uuid.uuid4().hex, uuid.uuid4().hex, run_input)

    async def start(self, client: SupportsEntityClient, turn: NewTurn) -> None:
        """Record the turn as accepted, then signal the agent's entity to run it.

        Raises:
            ValkeyUnavailableError: If the turn could not be recorded (nothing was started).
            TurnNotStartedError: If the durable backend refused the signal.
        """
        run_input = turn.run_input
        accepted_at_ms = int(time.time() * 1000)
        note_turn(turn.session_id, turn.correlation_id)
        request = RunRequest(
            message=run_input.message,
            correlation_id=turn.correlation_id,
            request_response_format=REQUEST_RESPONSE_FORMAT_JSON if run_input.is_json else REQUEST_RESPONSE_FORMAT_TEXT,
            role=run_input.role,
            enable_tool_calls=run_input.enable_tool_calls,
            created_at=datetime.now(UTC),
            # Where the turn streams and the trace it continues: the agent middleware reads them (see
            # travel_agents._turn_failures and _turn_tracing).
            options=turn_options(
                turn.session_id,
                turn.correlation_id,
                accepted_at_ms=accepted_at_ms,
                trace_headers=current_trace_headers(),
            ),
        )
        # Recorded first: from the moment the route answers, the status route says "pending".
        await self.buffer.record_turn_accepted(
            turn.session_id, turn.correlation_id, turn.agent, message=run_input.message, accepted_at_ms=accepted_at_ms
        )
        try:
            await client.signal_entity(agent_entity_id(turn.agent, turn.session_id), "run", request.to_dict())
        except Exception as error:
            # The durable backend (task hub storage or scheduler) refused or is unreachable: not the
            # client's mistake, and nothing was started, so the client may simply retry.
            logger.exception("Could not signal the entity of %s for session %s", turn.agent, turn.session_id)
            raise TurnNotStartedError("The turn could not be started; try again shortly.") from error
        logger.info("Started turn %s of %s in session %s", turn.correlation_id, turn.agent, turn.session_id)

    async def outcome(
        self, client: SupportsEntityClient, agent: str, session_id: str, correlation_id: str
    ) -> TurnOutcome:
        """A turn's outcome: the entity's committed state, or ``pending`` for an accepted turn it has not seen.

        Raises:
            ValkeyUnavailableError: If the entity does not know the turn and Valkey cannot tell.
        """
        outcome = await read_turn_outcome(client, agent, session_id, correlation_id)
        if outcome.status != "not_found":
            return outcome
        # Accepted but not yet in the entity's state (its signal is still queued)?
        accepted = await self.buffer.accepted_turn(session_id, correlation_id)
        if accepted is not None and accepted.agent == agent:
            return TurnOutcome(status="pending", message_count=outcome.message_count)
        return outcome

    async def cancel(
        self, client: SupportsEntityClient, agent: str, session_id: str, correlation_id: str
    ) -> TurnOutcome:
        """Ask whichever instance runs a pending turn to stop it; the turn's outcome before the request.

        Raises:
            ValkeyUnavailableError: If Valkey is unreachable (nothing was requested).
        """
        outcome = await self.outcome(client, agent, session_id, correlation_id)
        if outcome.status == "pending":
            await self.buffer.request_cancel(session_id, correlation_id)
            logger.info("Cancel requested for turn %s of %s in session %s", correlation_id, agent, session_id)
        return outcome

    async def wait(self, client: SupportsEntityClient, agent: str, session_id: str, correlation_id: str) -> TurnOutcome:
        """Poll the entity state until the turn has ended, or ``max_poll_retries`` reads; the last outcome read."""
        outcome = TurnOutcome(status="pending")
        for _ in range(self.max_poll_retries):
            await asyncio.sleep(self.poll_interval_seconds)
            try:
                outcome = await read_turn_outcome(client, agent, session_id, correlation_id)
            except Exception as error:  # the state may be momentarily unreadable; keep polling like the built-in
                logger.warning("Reading the state of %s/%s failed: %s", agent, session_id, error)
                continue
            if outcome.status in ("completed", "cancelled", "failed"):
                return outcome
        return outcome

    async def session_turns(
        self, client: SupportsEntityClient, agent: str, session_id: str
    ) -> list[SessionTurn] | None:
        """A session's turns in order: the entity's, then accepted turns it has not seen yet (``pending``).

        Returns:
            The turns; ``None`` when neither the entity nor Valkey knows the session for this agent.

        Raises:
            ValkeyUnavailableError: If the accepted turns cannot be read.
        """
        committed = await read_session_turns(client, agent, session_id)
        accepted = await self.buffer.accepted_turns(session_id)
        turns = list(committed or [])
        known = {turn.correlation_id for turn in turns}
        waiting = sorted(
            (record.accepted_at_ms, correlation_id, record.message)
            for correlation_id, record in accepted.items()
            if record.agent == agent and correlation_id not in known
        )
        turns += [SessionTurn(cid, message, TurnOutcome(status="pending")) for _, cid, message in waiting]
        return None if committed is None and not turns else turns

    def committed_lookup(self, client: SupportsEntityClient, session_id: str, agent: str | None) -> CommittedTurnLookup:
        """How a stream reader asks a turn's committed outcome: the entity state of the turn's agent.

        Args:
            client: The durable client.
            session_id: The session the reader follows.
            agent: The agent whose turns it follows, when the route names one.
        """

        async def committed_turn(correlation_id: str, agent_in_stream: str | None) -> TurnOutcome | None:
            for name in await self.agents_of_turn(session_id, correlation_id, agent or agent_in_stream):
                outcome = await read_turn_outcome(client, name, session_id, correlation_id)
                if outcome.status != "not_found":
                    return outcome
            return None

        return committed_turn

    async def agents_of_turn(self, session_id: str, correlation_id: str, known: str | None) -> list[str]:
        """The agents that may have run a turn: the one named (by a route or the stream), else the one its
        accepted-turn record names, else every registered agent."""
        if (agent := self.agent_named(known)) is not None:
            return [agent]
        with contextlib.suppress(ValkeyUnavailableError):
            accepted = await self.buffer.accepted_turn(session_id, correlation_id)
            if accepted is not None and (agent := self.agent_named(accepted.agent)) is not None:
                return [agent]
        return self.agent_names
