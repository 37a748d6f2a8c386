"""trip_planner on a local host over real HTTP and real Valkey: watched live, answered, cancelled, failed."""

from __future__ import annotations

import itertools
import random
import time

import httpx

from tests.e2e.devhost_process import DevHostProcess
from tests.eventually import eventually_blocking
from tests.workflows.workflow_client import (
    FollowedWorkflow,
    ended,
    follow,
    pending_request,
    respond,
    start,
    status,
)

RESEARCHERS = {"DestinationResearcher", "BudgetPlanner"}


def _lanes(seen: FollowedWorkflow, event: str) -> list[str]:
    return [e.data["agent"] for e in seen.named(event)]


def _cancel(http: httpx.Client, api: str, instance_id: str) -> None:
    response = http.post(f"{api}/workflow/trip_planner/cancel/{instance_id}")
    assert response.status_code in (202, 409), response.text


def test_the_two_researchers_stream_at_once_and_the_first_text_comes_within_3_s(
    host: DevHostProcess, http: httpx.Client
) -> None:
    started = time.monotonic()
    run = start(http, host.api, "Plan 3 days in Lisbon in May for 2 travellers")
    seen = follow(http, host.url + run["stream_url"], until=lambda e: e.event == "input_requested")
    _cancel(http, host.api, run["instanceId"])

    first_text = seen.named("message")[0]
    assert first_text.at - started < 3.0, f"first text {first_text.at - started:.2f} s after the start"
    assert seen.events[0].event == "workflow_started"
    # Both researchers start before either ends, and their chunks interleave.
    started_lanes = _lanes(seen, "step_started")
    assert set(started_lanes[:2]) == RESEARCHERS
    research = [agent for agent in _lanes(seen, "message") if agent in RESEARCHERS]
    switches = sum(1 for a, b in itertools.pairwise(research) if a != b)
    assert switches >= 4, research
    first_done = seen.events.index(seen.named("step_completed")[0])
    assert {e.data["agent"] for e in seen.events[:first_done] if e.event == "message"} == RESEARCHERS
    # Then the writer, alone, and the request for approval with its draft.
    assert started_lanes[2] == "PlanWriter"
    request = seen.named("input_requested")[0].data
    texts = seen.texts()
    writer = seen.named("step_started")[2].data["correlation_id"]
    assert request["request_data"] == {"draft": texts[writer], "round": 1}


def test_a_rejection_with_feedback_then_an_approval_outputs_the_revision(
    host: DevHostProcess, http: httpx.Client
) -> None:
    run = start(http, host.api, "Plan 2 days in Vienna in June")
    instance_id = run["instanceId"]
    first = pending_request(http, host.api, instance_id)
    assert first["requestData"]["round"] == 1
    assert first["responseType"].endswith(":PlanReview")
    assert first["respondUrl"].endswith(f"/api/workflow/trip_planner/respond/{instance_id}/{first['requestId']}")

    rejected = respond(http, host.api, instance_id, first["requestId"], {"approved": False, "feedback": "more museums"})
    assert rejected.status_code == 200, rejected.text
    again = respond(http, host.api, instance_id, first["requestId"], {"approved": True})
    assert again.status_code == 409 and "no longer pending" in again.json()["error"]

    second = pending_request(http, host.api, instance_id, other_than=first["requestId"])
    assert second["requestData"]["round"] == 2
    assert "more museums" in second["requestData"]["draft"]
    assert second["requestData"]["draft"] != first["requestData"]["draft"]
    assert respond(http, host.api, instance_id, second["requestId"], {"approved": True}).status_code == 200

    final = ended(http, host.api, instance_id)
    assert final["runtimeStatus"] == "Completed"
    assert final["output"] == [{"plan": second["requestData"]["draft"], "approved": True, "rounds": 2}]
    late = respond(http, host.api, instance_id, second["requestId"], {"approved": True})
    assert late.status_code == 409, late.text

    seen = follow(http, host.url + run["stream_url"])
    assert seen.end is not None and seen.end.event == "workflow_completed"
    assert seen.end.data["output"] == final["output"]
    assert [e.data["request_id"] for e in seen.named("input_requested")] == [first["requestId"], second["requestId"]]
    assert [e.data["response"]["approved"] for e in seen.named("input_received")] == [False, True]
    assert [s["agent"] for s in final["steps"]] == [*_lanes(seen, "step_started")]
    assert all(s["status"] == "completed" for s in final["steps"])


def test_cancel_while_an_agent_streams_stops_it_and_ends_the_workflow_cancelled(
    host: DevHostProcess, http: httpx.Client
) -> None:
    run = start(http, host.api, "Plan 3 days in Rome in April")
    instance_id = run["instanceId"]
    seen = follow(http, host.url + run["stream_url"], until=lambda e: len(e.data.get("text", "")) > 0)
    streaming = seen.named("message")[-1].data["correlation_id"]

    asked = time.monotonic()
    cancelled = http.post(f"{host.api}/workflow/trip_planner/cancel/{instance_id}")
    assert cancelled.status_code == 202, cancelled.text
    follow(http, host.url + run["stream_url"], seen)
    assert seen.end is not None and seen.end.event == "workflow_cancelled", [e.event for e in seen.events[-5:]]
    assert seen.end.at - asked < 2.0, f"ended {seen.end.at - asked:.2f} s after the cancel"
    assert streaming in {e.data["correlation_id"] for e in seen.named("step_cancelled")}

    def committed() -> dict | None:
        # The stream's end of a step is provisional: its answer is committed a moment later.
        current = status(http, host.api, instance_id)
        return current if all("response" in s or "error" in s for s in current["steps"]) else None

    final = eventually_blocking(committed, timeout=10, interval=0.1, message="the steps never committed")
    assert final["runtimeStatus"] == "Terminated"
    steps = {s["correlationId"]: s for s in final["steps"]}
    assert steps[streaming]["status"] == "cancelled"
    assert steps[streaming]["response"] == seen.texts()[streaming]
    assert not steps[streaming]["response"].endswith("Have a great trip!"), "stopped in its middle"
    assert all(s["status"] != "running" for s in final["steps"]), final["steps"]
    assert http.post(f"{host.api}/workflow/trip_planner/cancel/{instance_id}").status_code == 409


def test_a_failing_agent_fails_the_workflow_and_the_stream_says_so(host: DevHostProcess, http: httpx.Client) -> None:
    run = start(http, host.api, "Plan a trip to Oslo #fail")
    seen = follow(http, host.url + run["stream_url"])

    assert seen.end is not None and seen.end.event == "workflow_failed"
    assert "ScriptedModelError" in seen.end.data["error"]
    assert {e.data["agent"] for e in seen.named("step_failed")} == RESEARCHERS
    final = ended(http, host.api, run["instanceId"])
    assert final["runtimeStatus"] == "Failed"
    assert final["error"] == seen.end.data["error"]
    assert {s["status"] for s in final["steps"]} == {"failed"}


def test_a_reader_cut_at_random_points_sees_every_agents_text_once(host: DevHostProcess, http: httpx.Client) -> None:
    rng = random.Random(20)
    run = start(http, host.api, "Plan 3 days in Porto in May for 2 travellers")
    instance_id = run["instanceId"]
    url = host.url + run["stream_url"]
    seen = FollowedWorkflow()
    answered: set[str] = set()
    while seen.end is None:
        # A reader stops at a request to answer it: the workflow waits for that answer.
        follow(http, url, seen, max_events=rng.randint(1, 12), until=lambda e: e.event == "input_requested")
        for request in seen.named("input_requested"):
            if request.data["request_id"] not in answered:
                answered.add(request.data["request_id"])
                approve = len(answered) > 1
                body = {"approved": approve, "feedback": "" if approve else "cheaper"}
                assert respond(http, host.api, instance_id, request.data["request_id"], body).status_code == 200
        assert seen.connections < 500
    assert seen.connections > 10

    whole = follow(http, url)  # one uninterrupted read from the start
    ids = [e.id for e in seen.events]
    assert ids == [e.id for e in whole.events] and len(set(ids)) == len(ids)

    def all_committed() -> dict | None:
        current = ended(http, host.api, instance_id)
        return current if all("response" in s for s in current["steps"]) else None

    final = eventually_blocking(all_committed, timeout=10, interval=0.1, message="the steps never committed")
    committed = {s["correlationId"]: s["response"] for s in final["steps"]}
    assert len(committed) == 4  # two researchers, the writer twice
    assert seen.texts() == committed
