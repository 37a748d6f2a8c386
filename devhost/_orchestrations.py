"""Functions orchestrators and activities on the Durable Task worker, through the out-of-process protocol.

Each orchestrator function of the app becomes one Durable Task orchestrator of the same name that
plays the Functions host's part: it keeps the instance's history in the extension's JSON shape
(:class:`FunctionsHistory`), runs the user's orchestrator on it through the real
``azure.durable_functions`` SDK (:func:`replay`), carries out the new actions with the Durable Task
context (activities, timers, external events, entity calls and signals, sub-orchestrations,
continue-as-new) and records each result as the extension would, one completion at a time. The
user's code never sees the Durable Task context, so what passes here is what the SDK accepts on Azure.

The Durable Task orchestrator is itself replayed by its SDK on every work item; the Functions
history is rebuilt from the same results in the same order, so it is the same on every replay and
on every worker that shares the backend.

Payloads keep the Functions form (see ``_orchestration_functions``).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.durable_functions.constants import DATETIME_STRING_FORMAT
from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from azure.durable_functions.models.utils.df_serialization import df_dumps
from durabletask import task as dt
from durabletask.entities import EntityInstanceId

from ._orchestration_functions import OrchestrationFunctions, activity_runner, loads_text
from ._orchestration_history import (
    FunctionsHistory,
    NewAction,
    NonDeterministicOrchestrationError,
    ReplayOutcome,
    format_timestamp,
    replay,
)

UNSUPPORTED_ACTIONS = {
    ActionType.CALL_HTTP: "call_http (durable HTTP calls)",
}
"""Actions devhost does not carry out; an orchestrator that asks for one fails with a message naming it."""


class OrchestratorFunctionError(RuntimeError):
    """The orchestrator function raised: the instance fails with this message, as on Azure."""


class UnsupportedOrchestrationFeatureError(RuntimeError):
    """The orchestrator asked for something devhost does not emulate (see docs/orchestrations.md)."""


@dataclass
class _Pending:
    """A Durable Task task the bridge waits for, and how to record its result in the Functions history."""

    kind: str  # activity, sub, timer, event, entity, retry-timer
    task_id: int
    name: str = ""
    request_id: str = ""
    fire_at: str = ""
    action: NewAction | None = None
    attempt: int = 1


class ReplayCache:
    """The SDK's answers for histories this process has already replayed, so a replay costs one SDK run.

    The Durable Task worker replays the whole bridge on every work item, and the bridge runs the
    orchestrator once per result: without this, n sequential activities would cost n³ event
    replays. The SDK's answer depends only on the history (its replay is deterministic by
    contract), so a step whose history digest was seen before takes the recorded answer; the step
    with new events always runs the SDK. Bounded, least recently used first out.

    Args:
        capacity: Answers kept.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._answers: OrderedDict[tuple[str, str], tuple[ReplayOutcome, int]] = OrderedDict()
        self._lock = threading.Lock()

    def replay(
        self, name: str, handle: Callable[[Any], str], history: FunctionsHistory, *, is_replaying: bool
    ) -> ReplayOutcome:
        """:func:`replay`, or the answer recorded for the same orchestrator and history."""
        key = (name, history.digest)
        with self._lock:
            known = self._answers.get(key)
            if known is not None:
                self._answers.move_to_end(key)
        if known is not None:
            # Shared, never changed: the bridge only reads an outcome.
            outcome, next_task_id = known
            history.next_task_id = next_task_id
            return outcome
        outcome = replay(handle, history, is_replaying=is_replaying)
        with self._lock:
            self._answers[key] = (outcome, history.next_task_id)
            while len(self._answers) > self._capacity:
                self._answers.popitem(last=False)
        return outcome


_REPLAYS = ReplayCache()


class OrchestratorBridge:
    """Drives one Functions orchestrator on a Durable Task orchestration context.

    Args:
        name: The orchestrator function's name.
        handle: The handler the SDK registered for it.
        entity_names: The entities the workers host (lower case); a call to another fails the
            instance at once instead of waiting for an entity nobody runs. None: any.
        on_history: Called with the instance's history when the orchestrator returns, fails or
            continues as new (the tests replay recorded histories).
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[Any], str],
        entity_names: frozenset[str] | None = None,
        on_history: Callable[[FunctionsHistory], None] | None = None,
    ) -> None:
        self.name = name
        self.handle = handle
        self.entity_names = entity_names
        self.on_history = on_history

    def orchestrator(self) -> Callable[[Any, Any], Any]:
        """The Durable Task orchestrator function, named after the Functions orchestrator."""

        def run(ctx: dt.OrchestrationContext, input_json: Any) -> Generator[dt.Task[Any], Any, Any]:
            return self._run(ctx, loads_text(input_json))

        run.__name__ = self.name
        return run

    def _run(self, ctx: dt.OrchestrationContext, input_json: str | None) -> Generator[dt.Task[Any], Any, Any]:
        history = FunctionsHistory(
            ctx.instance_id, self.name, input_json, ctx.current_utc_datetime, ctx.parent_instance_id
        )
        pending: dict[dt.Task[Any], _Pending] = {}
        custom_status: Any = None
        while True:
            outcome = _REPLAYS.replay(self.name, self.handle, history, is_replaying=ctx.is_replaying)
            if outcome.done and self.on_history is not None and not ctx.is_replaying:
                self.on_history(history)
            if outcome.custom_status != custom_status:
                custom_status = outcome.custom_status
                ctx.set_custom_status(custom_status)
            for new_action in outcome.new_actions:
                scheduled = self._carry_out(ctx, history, new_action)
                if scheduled is not None:
                    pending[scheduled[0]] = scheduled[1]
            if outcome.error is not None:
                raise OrchestratorFunctionError(f"Orchestrator function '{self.name}' failed: {outcome.error}")
            if outcome.continued_as_new:
                ctx.continue_as_new(outcome.continue_as_new)
                return None
            if outcome.done:
                return df_dumps(outcome.output) if outcome.output is not None else None
            if not pending:
                raise UnsupportedOrchestrationFeatureError(
                    f"orchestrator '{self.name}' yielded a task devhost cannot complete (nothing is scheduled)"
                )
            completed = yield dt.when_any(list(pending))
            waited = pending.pop(completed)
            history.begin_episode(ctx.current_utc_datetime)
            follow_up = self._record(ctx, history, waited, completed)
            if follow_up is not None:
                pending[follow_up[0]] = follow_up[1]

    def _carry_out(
        self, ctx: dt.OrchestrationContext, history: FunctionsHistory, new_action: NewAction
    ) -> tuple[dt.Task[Any], _Pending] | None:
        action = new_action.action
        kind = ActionType(new_action.kind)
        task_id = new_action.task_id if new_action.task_id is not None else -1
        if kind in UNSUPPORTED_ACTIONS:
            raise UnsupportedOrchestrationFeatureError(
                f"orchestrator '{self.name}' uses {UNSUPPORTED_ACTIONS[kind]}, which devhost does not run "
                "(see docs/orchestrations.md)"
            )
        if kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY):
            name = action["functionName"]
            history.record_scheduled(new_action, event_id=task_id, Name=name, Input=action.get("input"))
            pending = _Pending("activity", task_id, name=name, action=new_action)
            return ctx.call_activity(name, input=action.get("input")), pending
        if kind in (ActionType.CALL_SUB_ORCHESTRATOR, ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY):
            name = action["functionName"]
            instance_id = action.get("instanceId") or f"{history.instance_id}:{task_id:04d}"
            history.record_scheduled(
                new_action, event_id=task_id, Name=name, InstanceId=instance_id, Input=action.get("input")
            )
            pending = _Pending("sub", task_id, name=name, action=new_action)
            sub = ctx.call_sub_orchestrator(name, input=action.get("input"), instance_id=instance_id)
            return sub, pending
        if kind == ActionType.CREATE_TIMER:
            # The SDK writes fireAt in UTC with DATETIME_STRING_FORMAT (json_utils.add_datetime_attrib).
            fire_at = datetime.strptime(action["fireAt"], DATETIME_STRING_FORMAT)
            history.record_scheduled(new_action, event_id=task_id, FireAt=format_timestamp(fire_at))
            return ctx.create_timer(fire_at), _Pending("timer", task_id, fire_at=format_timestamp(fire_at))
        if kind == ActionType.WAIT_FOR_EXTERNAL_EVENT:
            name = action["externalEventName"]
            history.record_scheduled(new_action, event_id=-1)
            return ctx.wait_for_external_event(name), _Pending("event", -1, name=name)
        if kind in (ActionType.CALL_ENTITY, ActionType.SIGNAL_ENTITY):
            return self._entity(ctx, history, new_action, task_id, signal=kind == ActionType.SIGNAL_ENTITY)
        raise UnsupportedOrchestrationFeatureError(
            f"orchestrator '{self.name}' asked for action type {kind.name}, which devhost does not run"
        )

    def _entity(
        self,
        ctx: dt.OrchestrationContext,
        history: FunctionsHistory,
        new_action: NewAction,
        task_id: int,
        *,
        signal: bool,
    ) -> tuple[dt.Task[Any], _Pending] | None:
        action = new_action.action
        scheduler_id = str(action["instanceId"])  # "@name@key", EntityId.get_scheduler_id
        name, _, key = scheduler_id[1:].partition("@")
        if self.entity_names is not None and name.lower() not in self.entity_names:
            raise UnsupportedOrchestrationFeatureError(
                f"orchestrator '{self.name}' calls entity '{name}', which devhost does not host: it runs the "
                f"agents' entities ({', '.join(sorted(self.entity_names)) or 'none'}), not @app.entity_trigger "
                "functions (see docs/orchestrations.md)"
            )
        entity = EntityInstanceId(name, key)
        input_json = action.get("input")
        value = json.loads(input_json) if input_json is not None else None
        # The request message the extension sends the entity ("op", "signal", "input", "id", "parent"),
        # with a deterministic id: the response is matched to it by name. Azure/azure-functions-durable-
        # extension src/WebJobs.Extensions.DurableTask/EntityScheduler/RequestMessage.cs
        request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{history.instance_id}/{task_id}"))
        request = {
            "id": request_id,
            "op": action["operation"],
            "signal": signal,
            "input": input_json,
            "parent": history.instance_id,
        }
        history.record_scheduled(
            new_action, event_id=task_id, Name="op", InstanceId=scheduler_id, Input=json.dumps(request)
        )
        if signal:
            ctx.signal_entity(entity, action["operation"], input=value)
            return None
        call = ctx.call_entity(entity, action["operation"], input=value)
        return call, _Pending("entity", task_id, request_id=request_id)

    def _record(
        self, ctx: dt.OrchestrationContext, history: FunctionsHistory, waited: _Pending, completed: dt.Task[Any]
    ) -> tuple[dt.Task[Any], _Pending] | None:
        failed = completed.is_failed
        error = completed.get_exception() if failed else None
        details = getattr(error, "details", None)
        message = getattr(details, "message", None) or (str(error) if error is not None else "")
        error_type = getattr(details, "error_type", None) or (type(error).__name__ if error is not None else "")
        if waited.kind == "timer":
            history.append(HistoryEventType.TIMER_FIRED, TimerId=waited.task_id, FireAt=waited.fire_at)
            return None
        if waited.kind == "event":
            history.append(HistoryEventType.EVENT_RAISED, Name=waited.name, Input=json.dumps(completed.get_result()))
            return None
        if waited.kind == "entity":
            if failed:
                response = {"result": json.dumps(message), "exceptionType": error_type}
            else:
                response = {"result": json.dumps(completed.get_result())}
            history.append(HistoryEventType.EVENT_RAISED, Name=waited.request_id, Input=json.dumps(response))
            return None
        if waited.kind == "retry-timer":
            history.append(HistoryEventType.TIMER_FIRED, TimerId=waited.task_id, FireAt=waited.fire_at)
            assert waited.action is not None
            if waited.attempt >= _max_attempts(waited.action):
                return None  # the SDK fails the task after this timer
            return self._attempt_again(ctx, history, waited)
        is_sub = waited.kind == "sub"
        if not failed:
            event_type = (
                HistoryEventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED if is_sub else HistoryEventType.TASK_COMPLETED
            )
            history.append(event_type, TaskScheduledId=waited.task_id, Result=loads_text(completed.get_result()))
            return None
        what = "Sub-orchestration" if is_sub else "Activity function"
        history.append(
            HistoryEventType.SUB_ORCHESTRATION_INSTANCE_FAILED if is_sub else HistoryEventType.TASK_FAILED,
            TaskScheduledId=waited.task_id,
            Reason=f"{what} '{waited.name}' failed: {message}",
            Details=json.dumps({"errorType": error_type, "message": message}),
        )
        retry = _retry_options(waited.action) if waited.action is not None else None
        if retry is not None:
            # The SDK's RetryAbleTask answers a failed attempt with a timer of its own (DTFx's
            # RetryInterceptor); the host fires it after the first retry interval.
            timer_id = history.take_task_id()
            interval = timedelta(milliseconds=int(retry["firstRetryIntervalInMilliseconds"]))
            fire_at = ctx.current_utc_datetime + interval
            history.append(HistoryEventType.TIMER_CREATED, event_id=timer_id, FireAt=format_timestamp(fire_at))
            timer = _Pending(
                "retry-timer",
                timer_id,
                name=waited.name,
                fire_at=format_timestamp(fire_at),
                action=waited.action,
                attempt=waited.attempt,
            )
            return ctx.create_timer(fire_at), timer
        return None

    def _attempt_again(
        self, ctx: dt.OrchestrationContext, history: FunctionsHistory, timer: _Pending
    ) -> tuple[dt.Task[Any], _Pending]:
        assert timer.action is not None
        action = timer.action.action
        task_id = history.take_task_id()
        name = action["functionName"]
        is_sub = timer.action.kind == ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY
        attempt = _Pending(
            "sub" if is_sub else "activity", task_id, name=name, action=timer.action, attempt=timer.attempt + 1
        )
        if is_sub:
            instance_id = f"{action.get('instanceId') or history.instance_id}:{task_id:04d}"
            history.append(
                HistoryEventType.SUB_ORCHESTRATION_INSTANCE_CREATED,
                event_id=task_id,
                Name=name,
                InstanceId=instance_id,
                Input=action.get("input"),
            )
            return ctx.call_sub_orchestrator(name, input=action.get("input"), instance_id=instance_id), attempt
        history.append(HistoryEventType.TASK_SCHEDULED, event_id=task_id, Name=name, Input=action.get("input"))
        return ctx.call_activity(name, input=action.get("input")), attempt


def _retry_options(new_action: NewAction) -> dict[str, Any] | None:
    options = new_action.action.get("retryOptions")
    return options if isinstance(options, dict) else None


def _max_attempts(new_action: NewAction) -> int:
    options = _retry_options(new_action) or {}
    return int(options.get("maxNumberOfAttempts") or 1)


def register_orchestrations(
    worker: Any, functions: OrchestrationFunctions, entity_names: frozenset[str] | None = None
) -> None:
    """Register every orchestrator (as a bridge) and activity of the app on a Durable Task worker.

    Args:
        worker: The ``TaskHubGrpcWorker``, not started yet.
        functions: The app's orchestrators and activities.
        entity_names: The entities the workers host (lower case), for the bridges' check.
    """
    for name, handle in functions.orchestrators.items():
        worker.add_orchestrator(OrchestratorBridge(name, handle, entity_names).orchestrator())
    for name, (function, input_param) in functions.activities.items():
        worker.add_activity(activity_runner(name, function, input_param))


__all__ = [
    "NonDeterministicOrchestrationError",
    "OrchestratorBridge",
    "OrchestratorFunctionError",
    "UnsupportedOrchestrationFeatureError",
    "register_orchestrations",
]
