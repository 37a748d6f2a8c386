"""Client side of a workflow instance over real HTTP: start it, follow its SSE with cuts, answer, cancel."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse

from tests.eventually import eventually_blocking

WORKFLOW = "trip_planner"
ENDS = ("workflow_completed", "workflow_failed", "workflow_cancelled")


@dataclass(frozen=True)
class Event:
    """One SSE event of an instance's stream, as the client got it."""

    id: str
    event: str
    data: dict[str, Any]
    at: float  # time.monotonic() when it arrived


@dataclass
class FollowedWorkflow:
    """What a client saw of one instance across its connections."""

    events: list[Event] = field(default_factory=list)
    connections: int = 0

    @property
    def last_event_id(self) -> str | None:
        ids = [event.id for event in self.events if event.id]
        return ids[-1] if ids else None

    @property
    def end(self) -> Event | None:
        return next((event for event in self.events if event.event in ENDS), None)

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event.event == name]

    def texts(self) -> dict[str, str]:
        """Each step's text (by correlation id), as a reader that applies message and replace shows it."""
        texts: dict[str, str] = {}
        for event in self.events:
            if event.event == "message":
                lane = event.data["correlation_id"]
                texts[lane] = texts.get(lane, "") + event.data["text"]
            elif event.event == "replace":
                texts[event.data["correlation_id"]] = event.data["text"]
        return texts


def start(http: httpx.Client, api: str, message: str) -> dict[str, Any]:
    """POST /workflow/trip_planner/run; the 202 body."""
    response = http.post(f"{api}/workflow/{WORKFLOW}/run", json={"message": message})
    assert response.status_code == 202, response.text
    return response.json()


def follow(
    http: httpx.Client,
    url: str,
    seen: FollowedWorkflow | None = None,
    *,
    until: Callable[[Event], bool] = lambda _: False,
    max_events: int | None = None,
) -> FollowedWorkflow:
    """Read the instance's SSE at ``url`` (after ``seen``'s last id) until its end, ``until`` or ``max_events``."""
    seen = seen or FollowedWorkflow()
    headers = {"Last-Event-ID": seen.last_event_id} if seen.last_event_id else {}
    seen.connections += 1
    read = 0
    with connect_sse(http, "GET", url, headers=headers) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if not sse.data:
                continue  # a retry hint or a comment's blank line
            event = Event(sse.id or "", sse.event, json.loads(sse.data), time.monotonic())
            seen.events.append(event)
            read += 1
            if event.event in ENDS or event.event == "error" or until(event):
                break
            if max_events is not None and read >= max_events:
                break
    return seen


def status(http: httpx.Client, api: str, instance_id: str) -> dict[str, Any]:
    response = http.get(f"{api}/workflow/{WORKFLOW}/status/{instance_id}")
    assert response.status_code == 200, response.text
    return response.json()


def pending_request(http: httpx.Client, api: str, instance_id: str, *, other_than: str | None = None) -> dict[str, Any]:
    """Wait for the instance to wait for a person; its (first) pending request."""

    def waiting() -> dict[str, Any] | None:
        requests = status(http, api, instance_id).get("pendingHumanInputRequests") or []
        return next((r for r in requests if r["requestId"] != other_than), None)

    return eventually_blocking(waiting, timeout=30, interval=0.1, message="the workflow never asked for input")


def respond(http: httpx.Client, api: str, instance_id: str, request_id: str, body: Any) -> httpx.Response:
    return http.post(f"{api}/workflow/{WORKFLOW}/respond/{instance_id}/{request_id}", json=body)


def ended(http: httpx.Client, api: str, instance_id: str) -> dict[str, Any]:
    """Wait for the instance to end; its status."""

    def done() -> dict[str, Any] | None:
        current = status(http, api, instance_id)
        return current if current["runtimeStatus"] in ("Completed", "Failed", "Terminated") else None

    return eventually_blocking(done, timeout=30, interval=0.1, message="the workflow never ended")
