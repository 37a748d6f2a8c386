"""The workflow routes' answers to bad input (4xx with a reason, never a 500), and scale-out over two local hosts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.devhost_process import DevHostProcess, host_pair
from tests.workflows.workflow_client import FollowedWorkflow, follow, pending_request, respond, start, status

ROUTES = ("status/{id}", "cancel/{id}", "stream/{id}", "respond/{id}/r1")


def _call(http: httpx.Client, api: str, workflow: str, route: str, instance_id: str) -> httpx.Response:
    path = f"{api}/workflow/{workflow}/{route.format(id=quote(instance_id, safe=''))}"
    if route.startswith("status") or route.startswith("stream"):
        return http.get(path)
    return http.post(path, json={"approved": True})


def test_an_unknown_workflow_is_a_404_naming_the_hosted_ones(host: DevHostProcess, http: httpx.Client) -> None:
    response = http.post(f"{host.api}/workflow/nope/run", json={"message": "hi"})
    assert response.status_code == 404 and "trip_planner" in response.json()["error"]
    for route in ROUTES:
        response = _call(http, host.api, "nope", route, "abc")
        assert response.status_code == 404, (route, response.text)
        assert "not hosted" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'{"msg": "x"}', b'{"message": ""}', b'{"message": "   "}', b'{"message": 3}'],
)
def test_a_run_without_a_message_is_a_400_with_a_reason(host: DevHostProcess, http: httpx.Client, body: bytes) -> None:
    response = http.post(f"{host.api}/workflow/trip_planner/run", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


@pytest.mark.parametrize("instance_id", ["{x}", "a b", "*", "-a", "x" * 300, "agent-stream:*"])
def test_a_bad_instance_id_is_a_400_and_an_unknown_one_a_404(
    host: DevHostProcess, http: httpx.Client, instance_id: str
) -> None:
    for route in ROUTES:
        response = _call(http, host.api, "trip_planner", route, instance_id)
        assert response.status_code == 400, (route, instance_id, response.text)
        assert "instanceId" in response.json()["error"]
    for route in ROUTES:
        response = _call(http, host.api, "trip_planner", route, "0123456789abcdef")
        assert response.status_code == 404, (route, response.text)


def test_answers_that_do_not_fit_the_response_type_are_refused(host: DevHostProcess, http: httpx.Client) -> None:
    run = start(http, host.api, "Plan 2 days in Bern")
    instance_id = run["instanceId"]
    request = pending_request(http, host.api, instance_id)
    request_id = request["requestId"]
    for body, reason in [
        ({"approved": "yes"}, "'approved' must be of type bool"),
        ({"feedback": "x"}, "'approved' is required"),
        ({"approved": True, "extra": 1}, "Unknown field(s) extra"),
        ({"approved": False, "feedback": 3}, "'feedback' must be of type str"),
        ([True], "must be a JSON object"),
    ]:
        response = respond(http, host.api, instance_id, request_id, body)
        assert response.status_code == 400 and reason in response.json()["error"], (body, response.text)
    bad_json = http.post(f"{host.api}/workflow/trip_planner/respond/{instance_id}/{request_id}", content=b"{")
    assert bad_json.status_code == 400
    assert respond(http, host.api, instance_id, "unknown-request", {"approved": True}).status_code == 404
    assert respond(http, host.api, instance_id, "a b", {"approved": True}).status_code == 400
    # Nothing was delivered: the request is still pending, and a fitting answer ends the workflow.
    assert status(http, host.api, instance_id)["pendingHumanInputRequests"][0]["requestId"] == request_id
    assert respond(http, host.api, instance_id, request_id, {"approved": True}).status_code == 200
    seen = follow(http, host.url + run["stream_url"])
    assert seen.end is not None and seen.end.event == "workflow_completed"


def test_a_chat_session_is_no_workflow_instance(host: DevHostProcess, http: httpx.Client) -> None:
    agent = http.get(f"{host.api}/health").json()["agents"][0]["name"]
    turn = http.post(f"{host.api}/agents/{agent}/run", json={"message": "hi"}).json()
    response = http.get(f"{host.api}/workflow/trip_planner/status/{turn['session_id']}")
    assert response.status_code == 404


@pytest.fixture(scope="module")
def two_hosts(workdir: Path) -> Iterator[tuple[DevHostProcess, DevHostProcess]]:
    """Host A serves HTTP only (no worker); host B shares A's backend and Valkey and runs everything."""
    with host_pair(workdir, "wf-scale") as pair:
        yield pair


def test_a_workflow_started_on_one_host_is_streamed_answered_and_cancelled_through_another(
    two_hosts: tuple[DevHostProcess, DevHostProcess], http: httpx.Client
) -> None:
    host_a, host_b = two_hosts
    run = start(http, host_a.api, "Plan 3 days in Madrid in March")
    instance_id = run["instanceId"]

    seen = follow(http, host_b.url + run["stream_url"], until=lambda e: e.event == "input_requested")
    request_id = seen.named("input_requested")[0].data["request_id"]
    answer = respond(http, host_b.api, instance_id, request_id, {"approved": False, "feedback": "add tapas"})
    assert answer.status_code == 200, answer.text

    # The writer's revision streams; cancel it through B while it does.
    follow(
        http,
        f"{host_b.api}/workflow/trip_planner/stream/{instance_id}",
        seen,
        until=lambda e: e.event == "message" and len(seen.named("step_started")) == 4,
    )
    revising = seen.named("step_started")[3].data["correlation_id"]
    asked = time.monotonic()
    assert http.post(f"{host_b.api}/workflow/trip_planner/cancel/{instance_id}").status_code == 202
    follow(http, host_a.url + run["stream_url"], seen)
    assert seen.end is not None and seen.end.event == "workflow_cancelled"
    assert seen.end.at - asked < 2.0
    assert revising in {e.data["correlation_id"] for e in seen.named("step_cancelled")}
    assert status(http, host_a.api, instance_id)["runtimeStatus"] == "Terminated"
    whole = follow(http, host_a.url + run["stream_url"], FollowedWorkflow())
    assert [e.id for e in whole.events] == [e.id for e in seen.events]
