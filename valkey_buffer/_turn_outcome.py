"""A turn's outcome as its source of truth (the durable agent's state) records it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

TurnStatus = Literal["not_found", "pending", "completed", "cancelled", "failed"]


@dataclass(frozen=True)
class TurnOutcome:
    """What the source of truth says about one turn.

    Readers use it to end a turn whose stream lacks its end (see ``CommittedTurnLookup``); the HTTP
    routes answer it as JSON.

    Attributes:
        status: ``not_found`` (no such turn), ``pending`` (accepted, nothing committed yet),
            ``completed``, ``cancelled`` (stopped on request; the partial answer is committed) or
            ``failed``.
        text: The committed answer of a completed turn, or the partial answer of a cancelled one.
        error: The error message of a failed turn.
        message_count: Requests and responses in the session's history, where the source keeps one.
    """

    status: TurnStatus
    text: str | None = None
    error: str | None = None
    message_count: int = 0

    @property
    def is_committed(self) -> bool:
        """Whether the turn has ended for good: completed, cancelled or failed."""
        return self.status in ("completed", "cancelled", "failed")


CommittedTurnLookup = Callable[[str, str | None], Awaitable[TurnOutcome | None]]
"""(correlation id, agent name if known) -> the turn's outcome; readers act on a committed one only."""
