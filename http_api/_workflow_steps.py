"""A workflow instance's steps (its agent calls) as its stream shows them: which agent, which lane, how far."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from valkey_buffer import StreamChunk

StepStatus = Literal["running", "completed", "cancelled", "failed"]

_ENDS: dict[str, StepStatus] = {"done": "completed", "cancelled": "cancelled", "error": "failed"}


@dataclass
class WorkflowStep:
    """One agent call of a workflow instance.

    Attributes:
        correlation_id: The call's correlation id: its turn in the instance's stream (its lane).
        agent: The agent that speaks in it.
        status: ``running`` from its ``step_started`` (or first entry) until its turn's terminal
            entry: ``completed``, ``cancelled`` or ``failed``.
    """

    correlation_id: str
    agent: str | None
    status: StepStatus = "running"

    def to_json(self) -> dict[str, str | None]:
        """The step in the status route's camelCase shape."""
        return {"agent": self.agent, "correlationId": self.correlation_id, "status": self.status}


def workflow_steps(entries: Iterable[StreamChunk]) -> list[WorkflowStep]:
    """The steps of an instance from its stream's entries, in the order they started."""
    steps: dict[str, WorkflowStep] = {}
    for entry in entries:
        if entry.correlation_id is None or not entry.entry_id:
            continue
        step = steps.setdefault(entry.correlation_id, WorkflowStep(entry.correlation_id, entry.agent))
        step.agent = step.agent or entry.agent
        if entry.kind in _ENDS:
            step.status = _ENDS[entry.kind]
    return list(steps.values())
