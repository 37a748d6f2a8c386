"""Reports a failed agent turn to its stream readers as an ``error`` entry.

Why a middleware: Agent Framework's durable entity calls the response callback only for turns that
succeed. When ``run(stream=True)`` raises, the entity retries once with a non-streaming ``run()``;
when that raises too, it records an error response in the entity state and calls no callback, so a
reader following the turn would only stop at its idle timeout. Agent middleware wraps both calls,
which makes it the one place of ours that sees the final failure as it happens. Which stream and
turn to write to comes with the run's options (see ``_stream_turn``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent_framework import AgentContext, AgentMiddleware

from ._stream_turn import StreamTurn, stream_turn_of

logger = logging.getLogger(__name__)


class SupportsWriteError(Protocol):
    """What the middleware needs from the stream buffer (``ValkeyStreamBuffer`` has it)."""

    def write_error(
        self, session_id: str, message: str, *, correlation_id: str, agent: str | None = None
    ) -> Awaitable[Any]:
        """Append the terminal ``error`` entry of a turn."""
        ...


class TurnFailureReporter(AgentMiddleware):
    """Agent middleware that writes an ``error`` entry when a turn's agent run fails for good.

    Only a failing non-streaming run is reported: a failing streaming run is followed by the
    entity's non-streaming retry, whose outcome (answer or failure) is the turn's final one.
    """

    def __init__(self, sink: SupportsWriteError, *, describe: Callable[[BaseException], str] | None = None) -> None:
        """Create the reporter.

        Args:
            sink: Where the error entry goes, usually the app's ``ValkeyStreamBuffer``.
            describe: Turns the exception into the message readers see; defaults to ``"<Type>: <message>"``.
        """
        self.sink = sink
        self._describe = describe or _describe_exception

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        """Run the agent without the private option and report a final failure to the turn's stream."""
        turn = stream_turn_of(context)
        try:
            await call_next()
        except Exception as exc:
            if turn is not None and not context.stream:
                await self._report(turn, exc, agent_name=getattr(context.agent, "name", None))
            raise

    async def _report(self, turn: StreamTurn, exc: BaseException, *, agent_name: str | None) -> None:
        try:
            await self.sink.write_error(
                turn.session_id, self._describe(exc), correlation_id=turn.correlation_id, agent=agent_name
            )
        except Exception:
            # Reporting must never replace the agent's own error, which the entity commits.
            logger.exception("Could not write the error entry of turn %s", turn.correlation_id)


def _describe_exception(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
