"""The official AG-UI client (``@ag-ui/client`` 1.0) drives the ``trip_planner`` workflow on devhost.

Its event verifier checks every run (lanes, messages and tool calls closed before ``RUN_FINISHED``,
nothing after ``RUN_ERROR``, interrupts answered by the next run's ``resume``): a run it rejects
ends in ``thrown``. What the client saw is compared with the workflow's status route.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import httpx

from tests.agui.agui_node import run_client
from tests.e2e.devhost_process import DevHostProcess
from tests.eventually import eventually_blocking
from travel_agents import FAIL_MARKER

WORKFLOW = "trip_planner"
RESEARCHERS = {"DestinationResearcher", "BudgetPlanner"}


def _url(devhost: DevHostProcess) -> str:
    return f"{devhost.api}/workflow/{WORKFLOW}/ag-ui"


def _status(devhost: DevHostProcess, instance_id: str) -> dict[str, Any]:
    response = httpx.get(f"{devhost.api}/workflow/{WORKFLOW}/status/{instance_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _ended(devhost: DevHostProcess, instance_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        status = _status(devhost, instance_id)
        return status if status["runtimeStatus"] not in ("Running", "Pending") else None

    return eventually_blocking(ended, timeout=30, interval=0.1, message="the workflow never ended")


def _verified(runs: list[dict[str, Any]]) -> None:
    for run in runs:
        assert "thrown" not in run, f"the client rejected a run: {run['thrown']} after {run['types'][-5:]}"


def test_the_client_drives_the_workflow_through_lanes_two_interrupts_and_its_output(
    client_ready: None, devhost: DevHostProcess
) -> None:
    thread = uuid.uuid4().hex
    shown = run_client(
        _url(devhost),
        [
            {"message": "Plan 2 days in Vienna in June"},
            {"resume": {"status": "resolved", "payload": {"approved": False, "feedback": "more museums"}}},
            {"resume": {"status": "resolved", "payload": {"approved": True}}},
        ],
        thread,
    )
    first, revised, approved = shown["results"]
    _verified(shown["results"])

    # The first run: both researchers' lanes at once (their text interleaves), then the writer, then the interrupt.
    assert [lane["name"] for lane in first["subagents"][:2]] in (
        ["DestinationResearcher", "BudgetPlanner"],
        ["BudgetPlanner", "DestinationResearcher"],
    )
    assert first["subagents"][2]["name"] == "PlanWriter"
    assert all(lane["end"] == "SUBAGENT_FINISHED" for lane in first["subagents"])
    researcher_lanes = {lane["id"] for lane in first["subagents"][:2]}
    research = [lane for lane in first["laneOrder"] if lane in researcher_lanes]
    switches = sum(1 for a, b in itertools.pairwise(research) if a != b)
    assert switches >= 2, "the researchers' lanes did not interleave"
    assert first["types"].index("SUBAGENT_FINISHED") > first["types"].index("SUBAGENT_STARTED", 1)
    assert first["outcome"] == "interrupt"
    (interrupt,) = first["interrupts"]
    draft = interrupt["metadata"]["requestData"]
    writer = first["subagents"][2]
    assert draft == {"draft": first["lanes"][writer["id"]], "round": 1}
    assert writer["result"] == {"status": "completed", "text": draft["draft"]}
    assert interrupt["responseSchema"]["required"] == ["approved"]

    # The rejection sends the writer back with the feedback: a new lane, and a second interrupt.
    assert [lane["name"] for lane in revised["subagents"]] == ["PlanWriter"]
    assert revised["outcome"] == "interrupt"
    (second,) = revised["interrupts"]
    assert second["id"] != interrupt["id"]
    assert second["metadata"]["requestData"]["round"] == 2
    assert "more museums" in second["metadata"]["requestData"]["draft"]

    # The approval ends the workflow: RUN_FINISHED with the output as its result, no lane left.
    assert approved["outcome"] == "success" and approved["subagents"] == []
    final = _ended(devhost, thread)
    assert final["runtimeStatus"] == "Completed"
    assert approved["result"] == final["output"]
    assert final["output"] == [{"plan": second["metadata"]["requestData"]["draft"], "approved": True, "rounds": 2}]
    steps = {step["correlationId"]: step for step in final["steps"]}
    lanes = first["subagents"] + revised["subagents"]
    assert [lane["id"] for lane in lanes] == list(steps)
    assert [lane["name"] for lane in lanes] == [step["agent"] for step in steps.values()]


def test_a_failing_workflow_ends_its_run_in_run_error(client_ready: None, devhost: DevHostProcess) -> None:
    thread = uuid.uuid4().hex
    (run,) = run_client(_url(devhost), [{"message": f"Plan Rome {FAIL_MARKER}"}], thread)["results"]

    _verified([run])
    assert run["types"][-1] == "RUN_ERROR" and run["outcome"] is None
    assert "ScriptedModelError" in (run["error"] or ""), run["error"]
    assert any(lane["end"] == "SUBAGENT_ERROR" for lane in run["subagents"]), run["subagents"]
    assert _ended(devhost, thread)["runtimeStatus"] == "Failed"


def test_a_cancelled_resume_cancels_the_workflow(client_ready: None, devhost: DevHostProcess) -> None:
    thread = uuid.uuid4().hex
    shown = run_client(
        _url(devhost), [{"message": "Plan 2 days in Oslo in May"}, {"resume": {"status": "cancelled"}}], thread
    )
    first, cancelled = shown["results"]

    _verified(shown["results"])
    assert first["outcome"] == "interrupt"
    assert cancelled["outcome"] == "cancelled" and cancelled["types"] == ["RUN_STARTED", "RUN_FINISHED"]
    final = _ended(devhost, thread)
    assert final["runtimeStatus"] == "Terminated"
    assert final.get("pendingHumanInputRequests") is None
