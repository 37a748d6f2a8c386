"""The host's side of the out-of-process protocol alone: orchestrators replayed by the SDK on hand-built histories.

The histories are built event by event the way the SDK's own tests build them
(Azure/azure-functions-durable-python ``tests/test_utils/ContextBuilder.py``): the extension's
PascalCase fields and ``HistoryEventType`` numbers. No backend, no worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as E

from devhost._orchestration_history import (
    FunctionsHistory,
    NonDeterministicOrchestrationError,
    format_timestamp,
    replay,
)

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class History:
    """A hand-built history: OrchestratorStarted and ExecutionStarted, then what a test appends."""

    def __init__(self, name: str, input_: Any = None) -> None:
        self.now = START
        self.input_json = json.dumps(input_) if input_ is not None else None
        self.events: list[dict[str, Any]] = []
        self.add(E.ORCHESTRATOR_STARTED)
        self.add(E.EXECUTION_STARTED, IsPlayed=True, Name=name, Version="", Input=self.input_json)

    def add(self, kind: E, event_id: int = -1, **fields: Any) -> History:
        self.now += timedelta(seconds=1)
        event = {
            "EventType": int(kind),
            "EventId": event_id,
            "IsPlayed": False,
            "Timestamp": format_timestamp(self.now),
        }
        event.update(fields)
        self.events.append(event)
        return self

    def episode(self) -> History:
        return self.add(E.ORCHESTRATOR_COMPLETED).add(E.ORCHESTRATOR_STARTED)

    def replayed(self) -> FunctionsHistory:
        return FunctionsHistory.from_events("instance-1", self.events, self.input_json)


def handle(fn: Callable[[Any], Generator[Any, Any, Any]]) -> Callable[[Any], str]:
    # What @app.orchestration_trigger registers: the SDK's Orchestrator.create handler.
    return df.Orchestrator.create(fn)


def add_one(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    value = yield context.call_activity("add_one", context.get_input())
    return value


def test_an_activity_is_scheduled_then_its_result_resumes_the_orchestrator() -> None:
    history = History("add_one", 41)
    first = replay(handle(add_one), history.replayed())
    assert [(a.kind, a.action["functionName"], a.task_id) for a in first.new_actions] == [
        (ActionType.CALL_ACTIVITY, "add_one", 0)
    ]
    assert json.loads(first.new_actions[0].action["input"]) == 41
    assert not first.done

    history.add(E.TASK_SCHEDULED, 0, Name="add_one").episode().add(E.TASK_COMPLETED, TaskScheduledId=0, Result="42")
    second = replay(handle(add_one), history.replayed())
    assert second.new_actions == []
    assert second.done and second.output == 42


def test_a_replay_that_schedules_another_activity_is_non_deterministic() -> None:
    history = History("add_one", 1).add(E.TASK_SCHEDULED, 0, Name="subtract_one")
    with pytest.raises(NonDeterministicOrchestrationError, match=r"subtract_one.*add_one"):
        replay(handle(add_one), history.replayed())


def test_a_replay_that_schedules_a_timer_where_an_activity_was_is_non_deterministic() -> None:
    def sleeps(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=5))

    history = History("sleeps").add(E.TASK_SCHEDULED, 0, Name="add_one")
    with pytest.raises(NonDeterministicOrchestrationError, match="Non-Deterministic"):
        replay(handle(sleeps), history.replayed())


def test_a_replay_that_drops_a_scheduled_activity_is_non_deterministic() -> None:
    def returns_at_once(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        return "done"
        yield  # a generator, as orchestrators are

    history = History("returns_at_once").add(E.TASK_SCHEDULED, 0, Name="add_one")
    with pytest.raises(NonDeterministicOrchestrationError, match="did not schedule"):
        replay(handle(returns_at_once), history.replayed())


def test_a_failed_activity_raises_in_the_orchestrator_which_may_catch_it() -> None:
    def catches(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        try:
            yield context.call_activity("boom")
        except Exception as error:
            return f"caught: {error}"

    history = (
        History("catches")
        .add(E.TASK_SCHEDULED, 0, Name="boom")
        .episode()
        .add(E.TASK_FAILED, TaskScheduledId=0, Reason="Activity function 'boom' failed: kaput", Details="{}")
    )
    outcome = replay(handle(catches), history.replayed())
    assert outcome.done and outcome.error is None
    assert "kaput" in outcome.output


def test_an_uncaught_failure_ends_the_orchestrator_with_its_message() -> None:
    history = (
        History("add_one", 1)
        .add(E.TASK_SCHEDULED, 0, Name="add_one")
        .episode()
        .add(E.TASK_FAILED, TaskScheduledId=0, Reason="Activity function 'add_one' failed: kaput", Details="{}")
    )
    outcome = replay(handle(add_one), history.replayed())
    assert outcome.done
    assert outcome.error is not None and "kaput" in outcome.error


def test_task_all_numbers_activities_and_entity_calls_in_order_and_waits_for_all() -> None:
    def fan(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        context.signal_entity(df.EntityId("audit", "k"), "log", "start")
        results = yield context.task_all(
            [
                context.call_activity("greet", "a"),
                context.call_activity("greet", "b"),
                context.call_entity(df.EntityId("counter", "k"), "add", 5),
            ]
        )
        return results

    history = History("fan")
    first = replay(handle(fan), history.replayed())
    kinds = [(a.kind, a.task_id) for a in first.new_actions]
    assert kinds == [
        (ActionType.SIGNAL_ENTITY, 0),
        (ActionType.CALL_ACTIVITY, 1),
        (ActionType.CALL_ACTIVITY, 2),
        (ActionType.CALL_ENTITY, 3),
    ]
    entity_call = first.new_actions[3].action
    assert entity_call["instanceId"] == "@counter@k" and entity_call["operation"] == "add"

    request = json.dumps({"id": "req-3", "op": "add", "signal": False, "input": "5"})
    history.add(E.EVENT_SENT, 0, Name="op", InstanceId="@audit@k", Input=json.dumps({"id": "sig", "op": "log"}))
    history.add(E.TASK_SCHEDULED, 1, Name="greet").add(E.TASK_SCHEDULED, 2, Name="greet")
    history.add(E.EVENT_SENT, 3, Name="op", InstanceId="@counter@k", Input=request)
    history.episode().add(E.TASK_COMPLETED, TaskScheduledId=2, Result='"b!"')
    partial = replay(handle(fan), history.replayed())
    assert not partial.done and partial.new_actions == []

    history.add(E.TASK_COMPLETED, TaskScheduledId=1, Result='"a!"')
    history.add(E.EVENT_RAISED, Name="req-3", Input=json.dumps({"result": json.dumps(6)}))
    done = replay(handle(fan), history.replayed())
    assert done.done and done.output == ["a!", "b!", 6]


def test_an_entity_exception_raises_in_the_orchestrator() -> None:
    def calls(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        try:
            yield context.call_entity(df.EntityId("counter", "k"), "explode")
        except Exception as error:
            return f"caught: {error}"

    history = History("calls").add(
        E.EVENT_SENT, 0, Name="op", InstanceId="@counter@k", Input=json.dumps({"id": "req-0", "op": "explode"})
    )
    history.episode().add(
        E.EVENT_RAISED,
        Name="req-0",
        Input=json.dumps({"result": json.dumps("it blew up"), "exceptionType": "ValueError"}),
    )
    outcome = replay(handle(calls), history.replayed())
    assert outcome.output == "caught: it blew up"


def test_a_timer_then_an_external_event() -> None:
    def waits(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=30))
        approval = yield context.wait_for_external_event("approval")
        return approval

    history = History("waits")
    first = replay(handle(waits), history.replayed())
    assert [(a.kind, a.task_id) for a in first.new_actions] == [(ActionType.CREATE_TIMER, 0)]
    fire_at = first.new_actions[0].action["fireAt"]

    history.add(E.TIMER_CREATED, 0, FireAt=fire_at).episode().add(E.TIMER_FIRED, TimerId=0, FireAt=fire_at)
    second = replay(handle(waits), history.replayed())
    assert [(a.kind, a.task_id, a.action["externalEventName"]) for a in second.new_actions] == [
        (ActionType.WAIT_FOR_EXTERNAL_EVENT, None, "approval")
    ]
    history.episode().add(E.EVENT_RAISED, Name="approval", Input=json.dumps({"ok": True}))
    assert replay(handle(waits), history.replayed()).output == {"ok": True}


def test_task_any_resumes_with_the_first_task_to_complete() -> None:
    def races(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        event = context.wait_for_external_event("go")
        timer = context.create_timer(context.current_utc_datetime + timedelta(minutes=5))
        winner = yield context.task_any([event, timer])
        return "event" if winner == event else "timer"

    history = History("races")
    first = replay(handle(races), history.replayed())
    assert [a.kind for a in first.new_actions] == [ActionType.WAIT_FOR_EXTERNAL_EVENT, ActionType.CREATE_TIMER]
    fire_at = first.new_actions[1].action["fireAt"]
    history.add(E.TIMER_CREATED, 0, FireAt=fire_at).episode().add(E.EVENT_RAISED, Name="go", Input="1")
    assert replay(handle(races), history.replayed()).output == "event"


def test_custom_status_new_uuid_and_current_time_are_the_same_on_every_replay() -> None:
    def stamps(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        stamp = {"uuid": context.new_uuid(), "time": context.current_utc_datetime.isoformat()}
        context.set_custom_status(stamp)
        yield context.call_activity("work")
        return {**stamp, "second_uuid": context.new_uuid()}

    history = History("stamps")
    first = replay(handle(stamps), history.replayed())
    history.add(E.TASK_SCHEDULED, 0, Name="work").episode().add(E.TASK_COMPLETED, TaskScheduledId=0, Result="null")
    again = replay(handle(stamps), history.replayed())
    assert again.custom_status == first.custom_status
    assert again.output["uuid"] == first.custom_status["uuid"]
    assert again.output["second_uuid"] != again.output["uuid"]
    assert again.output == replay(handle(stamps), history.replayed()).output


def test_retry_timers_and_attempts_take_sequence_numbers_as_the_sdk_expects() -> None:
    def retried(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        options = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=2)
        first = yield context.call_activity_with_retry("flaky", options)
        after = yield context.call_activity("after")
        return [first, after]

    history = History("retried")
    first = replay(handle(retried), history.replayed())
    assert first.new_actions[0].kind == ActionType.CALL_ACTIVITY_WITH_RETRY
    assert first.new_actions[0].action["retryOptions"] == {
        "firstRetryIntervalInMilliseconds": 1000,
        "maxNumberOfAttempts": 2,
    }
    history.add(E.TASK_SCHEDULED, 0, Name="flaky").episode()
    history.add(E.TASK_FAILED, TaskScheduledId=0, Reason="first attempt failed", Details="{}")
    history.add(E.TIMER_CREATED, 1, FireAt=format_timestamp(history.now)).episode()
    history.add(E.TIMER_FIRED, TimerId=1).add(E.TASK_SCHEDULED, 2, Name="flaky").episode()
    history.add(E.TASK_COMPLETED, TaskScheduledId=2, Result='"second attempt"')
    outcome = replay(
        handle(retried), FunctionsHistory.from_events("instance-1", history.events, retry_event_ids=frozenset({1, 2}))
    )
    # The retry's own timer and second attempt are not actions: the next activity takes id 3.
    assert [(a.action["functionName"], a.task_id) for a in outcome.new_actions] == [("after", 3)]


def test_continue_as_new_ends_the_run_with_the_new_input() -> None:
    def again(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        value = context.get_input()
        yield context.call_activity("tick", value)
        context.continue_as_new(value + 1)

    history = History("again", 1).add(E.TASK_SCHEDULED, 0, Name="tick").episode()
    history.add(E.TASK_COMPLETED, TaskScheduledId=0, Result="null")
    outcome = replay(handle(again), history.replayed())
    assert outcome.done and outcome.continued_as_new
    assert json.loads(outcome.continue_as_new or "null") == 2


def test_a_sub_orchestration_result_and_failure_reach_the_parent() -> None:
    def parent(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        result = yield context.call_sub_orchestrator("child", 3)
        try:
            yield context.call_sub_orchestrator("child", -1)
        except Exception as error:
            return [result, str(error)]

    history = History("parent")
    first = replay(handle(parent), history.replayed())
    assert [(a.kind, a.action["functionName"], a.task_id) for a in first.new_actions] == [
        (ActionType.CALL_SUB_ORCHESTRATOR, "child", 0)
    ]
    history.add(E.SUB_ORCHESTRATION_INSTANCE_CREATED, 0, Name="child", InstanceId="instance-1:0000").episode()
    history.add(E.SUB_ORCHESTRATION_INSTANCE_COMPLETED, TaskScheduledId=0, Result="6")
    history.add(E.SUB_ORCHESTRATION_INSTANCE_CREATED, 1, Name="child", InstanceId="instance-1:0001").episode()
    history.add(E.SUB_ORCHESTRATION_INSTANCE_FAILED, TaskScheduledId=1, Reason="negative", Details="{}")
    outcome = replay(handle(parent), history.replayed())
    assert outcome.output[0] == 6 and "negative" in outcome.output[1]
