"""Histories recorded from the backend: the bridge runs orchestrators on the in-memory backend and worker;
what it recorded replays through the SDK to the same result, or fails as non-deterministic once changed."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker

from devhost._durable import SDK_LOGGER, LoopbackOrchestrationBackend
from devhost._orchestration_functions import activity_runner, from_payload, to_payload
from devhost._orchestration_history import FunctionsHistory, NonDeterministicOrchestrationError, replay
from devhost._orchestrations import OrchestratorBridge


def shout(word: str) -> str:
    return word.upper()


def explode(message: str) -> str:
    raise ValueError(message)


def child(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    return (yield context.call_activity("shout", context.get_input()))


def journey(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    words = context.get_input()
    context.set_custom_status({"uuid": context.new_uuid()})
    loud = yield context.task_all([context.call_activity("shout", w) for w in words])
    yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=200))
    try:
        yield context.call_activity("explode", "on purpose")
    except Exception as error:
        caught = "on purpose" in str(error)
    from_child = yield context.call_sub_orchestrator("child", "child")
    return {"loud": loud, "caught": caught, "child": from_child, "uuid": context.new_uuid()}


def changed_journey(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    # The same start, then the sub-orchestration before the timer: a replay of journey's history fails.
    words = context.get_input()
    yield context.task_all([context.call_activity("shout", w) for w in words])
    yield context.call_sub_orchestrator("child", "child")


@pytest.fixture
def recorded() -> Iterator[dict[str, FunctionsHistory]]:
    histories: dict[str, FunctionsHistory] = {}
    backend = LoopbackOrchestrationBackend()
    address = backend.start()
    worker = TaskHubGrpcWorker(host_address=address, logger=SDK_LOGGER)
    for name, fn in (("journey", journey), ("child", child)):
        bridge = OrchestratorBridge(
            name, df.Orchestrator.create(fn), on_history=lambda h, n=name: histories.__setitem__(n, h)
        )
        worker.add_orchestrator(bridge.orchestrator())
    worker.add_activity(activity_runner("shout", shout, "word"))
    worker.add_activity(activity_runner("explode", explode, "message"))
    worker.start()
    client = TaskHubGrpcClient(host_address=address, logger=SDK_LOGGER)
    try:
        instance_id = client.schedule_new_orchestration("journey", input=to_payload(["a", "b", "c"]))
        state = client.wait_for_orchestration_completion(instance_id, timeout=30)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state
        histories["output"] = from_payload(json.loads(state.serialized_output or "null"))  # type: ignore[assignment]
        yield histories
    finally:
        client.close()
        worker.stop()
        backend.stop(grace=1)


def test_a_recorded_history_replays_through_the_sdk_to_the_same_output(recorded: dict[str, Any]) -> None:
    output = recorded["output"]
    assert output["loud"] == ["A", "B", "C"] and output["caught"] is True and output["child"] == "CHILD"
    history: FunctionsHistory = recorded["journey"]
    again = replay(df.Orchestrator.create(journey), _copy(history))
    assert again.done and again.new_actions == []
    assert again.output == output
    assert again.custom_status == replay(df.Orchestrator.create(journey), _copy(history)).custom_status


def _copy(history: FunctionsHistory) -> FunctionsHistory:
    return FunctionsHistory.from_events(history.instance_id, history.events, history.input_json)


def test_the_recorded_history_has_the_events_the_extension_records(recorded: dict[str, Any]) -> None:
    kinds = [event["EventType"] for event in recorded["journey"].events]
    names = {HistoryEventType(kind).name for kind in kinds}
    assert {
        "ORCHESTRATOR_STARTED",
        "EXECUTION_STARTED",
        "TASK_SCHEDULED",
        "TASK_COMPLETED",
        "TASK_FAILED",
        "TIMER_CREATED",
        "TIMER_FIRED",
        "SUB_ORCHESTRATION_INSTANCE_CREATED",
        "SUB_ORCHESTRATION_INSTANCE_COMPLETED",
    } <= names


def test_a_changed_orchestrator_on_a_recorded_history_is_non_deterministic(recorded: dict[str, Any]) -> None:
    history: FunctionsHistory = recorded["journey"]
    with pytest.raises(NonDeterministicOrchestrationError, match="timer"):
        replay(df.Orchestrator.create(changed_journey), _copy(history))
