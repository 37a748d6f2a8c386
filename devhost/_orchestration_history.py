"""The host's side of the out-of-process orchestrator protocol: the history it sends, the actions it takes back.

On Azure the Functions host's durable extension replays a Python orchestrator by sending it a JSON
context (the instance's history events, ``isReplaying``, input, instance id, schema version) and
reading the ``OrchestratorState`` the ``azure.durable_functions`` SDK returns: the actions the
orchestrator asked for so far, done or not, its output, error and custom status. This module is
that exchange, with nothing of the Durable Task SDK in it: :class:`FunctionsHistory` builds the
history the way the extension serializes ``DurableTask.Core`` history events (PascalCase fields,
``EventType`` numbers of ``HistoryEventType``; the SDK's own tests build theirs the same way, see
Azure/azure-functions-durable-python ``tests/test_utils/ContextBuilder.py``), and :func:`replay`
runs the orchestrator through the SDK's handler on it, checks the actions against the ones the
history already scheduled (the host's non-determinism check) and returns the new ones.

Task ids follow the SDK (``DurableOrchestrationContext._add_to_open_tasks`` and
``_record_fire_and_forget_action``): one sequence number per activity, timer, sub-orchestration,
entity call and entity signal, in the order the orchestrator scheduled them, none for an external
event (it is matched by name); a retried task takes one more for each retry timer and each attempt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.durable_functions.constants import DATETIME_STRING_FORMAT
from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType

# The schema: actions come back as one flat list per replay (schemaVersion 1, "ReplayPatchV1"), compound
# tasks as WhenAll/WhenAny actions with compoundActions; the failure message is
# "Orchestrator function '{name}' failed: {error}". Azure/azure-functions-durable-extension
# src/WebJobs.Extensions.DurableTask/Listener/OutOfProcOrchestrationShim.cs (ReplayOOProcOrchestration,
# ScheduleDurableTaskEvents) and src/WebJobs.Extensions.DurableTask/Bindings/
# OrchestrationTriggerAttributeBindingProvider.cs (the context JSON).
UPPER_SCHEMA_VERSION = 1

# Out-of-process errors carry the orchestrator state after this label (the SDK's
# TaskOrchestrationExecutor.get_orchestrator_state_str, read by OutOfProcOrchestrationShim).
_OUT_OF_PROC_DATA = "\n\n$OutOfProcData$:"

_SCHEDULING_EVENTS = {
    HistoryEventType.TASK_SCHEDULED,
    HistoryEventType.TIMER_CREATED,
    HistoryEventType.SUB_ORCHESTRATION_INSTANCE_CREATED,
    HistoryEventType.EVENT_SENT,
}

# Actions that take a sequence number, and the scheduling event the host records for each.
_NUMBERED_ACTIONS = {
    ActionType.CALL_ACTIVITY: HistoryEventType.TASK_SCHEDULED,
    ActionType.CALL_ACTIVITY_WITH_RETRY: HistoryEventType.TASK_SCHEDULED,
    ActionType.CALL_SUB_ORCHESTRATOR: HistoryEventType.SUB_ORCHESTRATION_INSTANCE_CREATED,
    ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY: HistoryEventType.SUB_ORCHESTRATION_INSTANCE_CREATED,
    ActionType.CREATE_TIMER: HistoryEventType.TIMER_CREATED,
    ActionType.CALL_ENTITY: HistoryEventType.EVENT_SENT,
    ActionType.SIGNAL_ENTITY: HistoryEventType.EVENT_SENT,
    ActionType.CALL_HTTP: HistoryEventType.TASK_SCHEDULED,
}


class NonDeterministicOrchestrationError(RuntimeError):
    """A replay scheduled something other than what the history says the first run scheduled."""


class OrchestratorProtocolError(RuntimeError):
    """The SDK answered with something the host cannot read (an action type it does not know)."""


def format_timestamp(moment: datetime) -> str:
    """``moment`` as the extension writes timestamps (UTC, ``DATETIME_STRING_FORMAT``)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime(DATETIME_STRING_FORMAT)


def action_name(action: dict[str, Any]) -> str:
    """What the host compares between runs for one action: its function, entity and operation, or event."""
    kind = action.get("actionType")
    if kind in (ActionType.CALL_ENTITY, ActionType.SIGNAL_ENTITY):
        return f"{action.get('instanceId')}:{action.get('operation')}"
    if kind == ActionType.WAIT_FOR_EXTERNAL_EVENT:
        return str(action.get("externalEventName"))
    if kind == ActionType.CREATE_TIMER:
        return "timer"
    return str(action.get("functionName") or "")


def _event_name(event: dict[str, Any]) -> str:
    kind = event["EventType"]
    if kind == HistoryEventType.EVENT_SENT:
        request = json.loads(event.get("Input") or "{}")
        return f"{event.get('InstanceId')}:{request.get('op')}"
    if kind == HistoryEventType.TIMER_CREATED:
        return "timer"
    return str(event.get("Name") or "")


def flatten_actions(actions: list[Any]) -> Iterator[dict[str, Any]]:
    """The atomic actions of an ``OrchestratorState``'s action lists, compound actions opened, in order."""
    for action in actions:
        if isinstance(action, list):
            yield from flatten_actions(action)
        elif action.get("actionType") in (ActionType.WHEN_ALL, ActionType.WHEN_ANY):
            yield from flatten_actions(action.get("compoundActions") or [])
        else:
            yield action


@dataclass
class NewAction:
    """An action the orchestrator asked for in this replay and the host has not carried out yet.

    Attributes:
        action: The action as the SDK serialized it (``actionType``, ``functionName``, ``input``...).
        task_id: Its sequence number; None for a wait for an external event (matched by name).
    """

    action: dict[str, Any]
    task_id: int | None

    @property
    def kind(self) -> int:
        """The ``ActionType`` number."""
        return int(self.action["actionType"])


@dataclass
class ReplayOutcome:
    """What one replay of the orchestrator returned.

    Attributes:
        new_actions: Actions beyond what the history already scheduled.
        done: The orchestrator returned (or continued as new, or failed).
        output: Its return value, when done.
        error: The message of the exception it raised, when it failed.
        custom_status: Its custom status (None when never set).
        continue_as_new: The input of ``continue_as_new``, as JSON text, when it called it; else None.
        continued_as_new: Whether it called ``continue_as_new``.
    """

    new_actions: list[NewAction] = field(default_factory=list)
    done: bool = False
    output: Any = None
    error: str | None = None
    custom_status: Any = None
    continue_as_new: str | None = None
    continued_as_new: bool = False


class FunctionsHistory:
    """An orchestration instance's history as the durable extension hands it to the SDK.

    Args:
        instance_id: The instance id.
        name: The orchestrator function's name.
        input_json: The instance's input as JSON text (None for no input).
        started_at: When the instance started (the first ``OrchestratorStarted``).
        parent_instance_id: The parent's instance id, for a sub-orchestration.
    """

    def __init__(
        self,
        instance_id: str,
        name: str,
        input_json: str | None,
        started_at: datetime,
        parent_instance_id: str | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.name = name
        self.input_json = input_json
        self.parent_instance_id = parent_instance_id
        self.events: list[dict[str, Any]] = []
        self._scheduled: dict[int, dict[str, Any]] = {}
        self._digest = hashlib.blake2b(f"{instance_id}\n{name}\n{input_json}".encode(), digest_size=16)
        # Ids of the scheduling events that answer an action (a retry's timers and later attempts do
        # not: the SDK schedules those itself, without an action).
        self._action_event_ids: list[int] = []
        self._waits_seen = 0
        self.next_task_id = 0
        self._now = started_at
        self.append(HistoryEventType.ORCHESTRATOR_STARTED, timestamp=started_at)
        self.append(HistoryEventType.EXECUTION_STARTED, Name=name, Version="", Input=input_json, IsPlayed=True)

    @classmethod
    def from_events(
        cls,
        instance_id: str,
        events: list[dict[str, Any]],
        input_json: str | None = None,
        *,
        retry_event_ids: frozenset[int] = frozenset(),
    ) -> FunctionsHistory:
        """A history built by hand (or kept from elsewhere).

        Args:
            instance_id: The instance id.
            events: History events in the extension's JSON shape, ``OrchestratorStarted`` and
                ``ExecutionStarted`` first.
            input_json: The instance's input as JSON text.
            retry_event_ids: The ids of the scheduling events a retry made (its timers and later
                attempts); every other scheduling event answers one of the orchestrator's actions.
        """
        history = cls.__new__(cls)
        history.instance_id = instance_id
        history.name = next(
            (str(e.get("Name")) for e in events if e["EventType"] == HistoryEventType.EXECUTION_STARTED), ""
        )
        history.input_json = input_json
        history.parent_instance_id = None
        history.events = list(events)
        history._scheduled = {e["EventId"]: e for e in events if e["EventType"] in _SCHEDULING_EVENTS}
        history._digest = hashlib.blake2b(digest_size=16)
        for event in history.events:
            history._digest.update(json.dumps(event, sort_keys=True).encode())
        scheduled = sorted(e["EventId"] for e in events if e["EventType"] in _SCHEDULING_EVENTS)
        history._action_event_ids = [event_id for event_id in scheduled if event_id not in retry_event_ids]
        history._waits_seen = 0
        history.next_task_id = (scheduled[-1] + 1) if scheduled else 0
        history._now = datetime.now(UTC)
        return history

    def append(
        self, event_type: HistoryEventType, *, event_id: int = -1, timestamp: datetime | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Append one event in the extension's JSON shape and return it."""
        if timestamp is not None:
            self._now = timestamp
        event: dict[str, Any] = {
            "EventType": int(event_type),
            "EventId": event_id,
            "IsPlayed": False,
            "Timestamp": format_timestamp(self._now),
        }
        event.update(fields)
        self.events.append(event)
        self._digest.update(json.dumps(event, sort_keys=True).encode())
        if event_type in _SCHEDULING_EVENTS:
            self._scheduled[event_id] = event
        return event

    @property
    def digest(self) -> str:
        """A fingerprint of the instance and every event so far: equal histories, equal digests."""
        return self._digest.hexdigest()

    def begin_episode(self, now: datetime) -> None:
        """Close the running episode and open one at ``now`` (``OrchestratorCompleted``, ``OrchestratorStarted``).

        The SDK takes ``current_utc_datetime`` from the last ``OrchestratorStarted``, and counts the
        events before it as replayed.
        """
        if format_timestamp(now) == self.events[-1]["Timestamp"] and self.events[-1]["EventType"] == int(
            HistoryEventType.ORCHESTRATOR_STARTED
        ):
            return
        self.append(HistoryEventType.ORCHESTRATOR_COMPLETED)
        self.append(HistoryEventType.ORCHESTRATOR_STARTED, timestamp=now)

    def take_task_id(self) -> int:
        """The next sequence number (a retry's timer or next attempt takes one, as the SDK's task does)."""
        task_id = self.next_task_id
        self.next_task_id += 1
        return task_id

    def record_scheduled(self, new_action: NewAction, *, event_id: int, **fields: Any) -> None:
        """Append the scheduling event of an action the host carries out (none for a wait)."""
        if new_action.task_id is None:
            self._waits_seen += 1
            return
        event_type = _NUMBERED_ACTIONS[ActionType(new_action.kind)]
        self.append(event_type, event_id=event_id, **fields)
        self._action_event_ids.append(event_id)

    def context_json(self, is_replaying: bool) -> str:
        """The orchestration trigger's JSON, as OrchestrationTriggerAttributeBindingProvider builds it."""
        context: dict[str, Any] = {
            "history": self.events,
            "instanceId": self.instance_id,
            "isReplaying": is_replaying,
            "parentInstanceId": self.parent_instance_id,
            "input": self.input_json,
            "upperSchemaVersion": UPPER_SCHEMA_VERSION,
        }
        return json.dumps(context)

    def match(self, actions: list[dict[str, Any]]) -> list[NewAction]:
        """Check ``actions`` against what the history scheduled; number and return the ones it has not.

        Raises:
            NonDeterministicOrchestrationError: When an action differs from the one the history
                recorded at the same place, or one the history recorded is missing.
        """
        numbered = [a for a in actions if a.get("actionType") in _NUMBERED_ACTIONS]
        waits = [a for a in actions if a.get("actionType") == ActionType.WAIT_FOR_EXTERNAL_EVENT]
        for position, event_id in enumerate(self._action_event_ids):
            event = self._scheduled.get(event_id)
            if event is None:
                continue
            if position >= len(numbered):
                raise NonDeterministicOrchestrationError(
                    f"Non-Deterministic workflow detected: a previous execution of orchestration "
                    f"'{self.name}' ({self.instance_id}) scheduled {_describe_event(event)} with sequence id "
                    f"{event_id}, but the replay did not schedule it. Was the orchestrator changed after "
                    "this instance started?"
                )
            action = numbered[position]
            expected_type = _NUMBERED_ACTIONS.get(ActionType(action["actionType"]))
            if expected_type != event["EventType"] or action_name(action) != _event_name(event):
                raise NonDeterministicOrchestrationError(
                    f"Non-Deterministic workflow detected: a previous execution of orchestration "
                    f"'{self.name}' ({self.instance_id}) scheduled {_describe_event(event)} with sequence id "
                    f"{event_id}, but the replay scheduled {_describe_action(action)} there. Was the "
                    "orchestrator changed after this instance started?"
                )
        # In the orchestrator's order, so that a signal sent before a call is carried out first.
        unseen = {id(a) for a in numbered[len(self._action_event_ids) :]} | {id(a) for a in waits[self._waits_seen :]}
        return [
            NewAction(
                action, None if action.get("actionType") == ActionType.WAIT_FOR_EXTERNAL_EVENT else self.take_task_id()
            )
            for action in actions
            if id(action) in unseen
        ]


def _describe_event(event: dict[str, Any]) -> str:
    kind = HistoryEventType(event["EventType"]).name.lower().replace("_", " ")
    return f"{kind} '{_event_name(event)}'"


def _describe_action(action: dict[str, Any]) -> str:
    try:
        kind = ActionType(action["actionType"]).name.lower().replace("_", " ")
    except (KeyError, ValueError):
        kind = "an unknown action"
    return f"{kind} '{action_name(action)}'"


def run_orchestrator(handle: Callable[[Any], str], context_json: str) -> dict[str, Any]:
    """Call the SDK's orchestration handler on a context; its ``OrchestratorState`` as a dict.

    An orchestrator that raised comes back as the state the SDK attached to its error, with the
    error's message in ``error`` (OutOfProcOrchestrationShim reads it the same way).
    """
    try:
        return dict(json.loads(handle(context_json)))
    except Exception as error:
        message = str(error)
        head, separator, data = message.partition(_OUT_OF_PROC_DATA)
        if not separator:
            raise
        state = dict(json.loads(data))
        state.setdefault("error", head)
        state["isDone"] = True
        return state


def replay(handle: Callable[[Any], str], history: FunctionsHistory, *, is_replaying: bool = False) -> ReplayOutcome:
    """Run the orchestrator on ``history`` through the SDK and read what it asked for.

    Args:
        handle: The function the SDK's ``orchestration_trigger`` registered (``Orchestrator.create``'s
            handler: JSON context in, ``OrchestratorState`` JSON out).
        history: The instance's history so far.
        is_replaying: The context's ``isReplaying``.

    Returns:
        The new actions, numbered as the SDK numbers them, and the orchestrator's state.

    Raises:
        NonDeterministicOrchestrationError: When the actions do not extend the ones the history recorded.
        OrchestratorProtocolError: When the SDK returned an action type the host does not know.
    """
    state = run_orchestrator(handle, history.context_json(is_replaying))
    actions = list(flatten_actions(state.get("actions") or []))
    for action in actions:
        try:
            ActionType(action.get("actionType"))
        except ValueError:
            raise OrchestratorProtocolError(f"unknown action from the orchestrator: {action!r}") from None
    continued = [a for a in actions if a.get("actionType") == ActionType.CONTINUE_AS_NEW]
    scheduling = [a for a in actions if a.get("actionType") != ActionType.CONTINUE_AS_NEW]
    outcome = ReplayOutcome(
        new_actions=history.match(scheduling),
        done=bool(state.get("isDone")),
        output=state.get("output"),
        error=state.get("error"),
        custom_status=state.get("customStatus"),
    )
    if continued:
        outcome.continued_as_new = True
        outcome.continue_as_new = continued[-1].get("input")
    return outcome
