"""The workflows' AG-UI route on devhost over real HTTP: refusals with reasons, runs cut and re-attached, scale-out.

Events are read with a real SSE parser and parsed with the protocol library's models; every response
is checked to be a whole AG-UI run on its own (what it attributes to a lane or a message, it opened).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import Event
from httpx_sse import connect_sse
from pydantic import TypeAdapter

from tests.e2e.devhost_process import DevHostProcess, host_pair

WORKFLOW = "trip_planner"
EVENT = TypeAdapter(Event)
ENDS = ("RUN_FINISHED", "RUN_ERROR")


@dataclass(frozen=True)
class Seen:
    id: str
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.data["type"])


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client


def _body(thread: str, run: str, *, message: str | None = None, resume: list[dict] | None = None) -> dict:
    body: dict[str, Any] = {"threadId": thread, "runId": run, "messages": []}
    if message is not None:
        body["messages"] = [{"id": uuid.uuid4().hex, "role": "user", "content": message}]
    if resume is not None:
        body["resume"] = resume
    return body


def _post(
    http: httpx.Client, devhost: DevHostProcess, body: dict, *, last_event_id: str | None = None, limit: int = 10_000
) -> list[Seen]:
    """One response of the route: its events (at most ``limit``, then the connection is cut), checked."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    seen: list[Seen] = []
    url = f"{devhost.api}/workflow/{WORKFLOW}/ag-ui"
    with connect_sse(http, "POST", url, json=body, headers=headers) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if not sse.data:
                continue
            EVENT.validate_json(sse.data)
            assert sse.id, f"an event without an id: {sse.data}"
            seen.append(Seen(sse.id, json.loads(sse.data)))
            if len(seen) >= limit or seen[-1].type in ENDS:
                break
    _assert_whole_run(seen)
    return seen


def _assert_whole_run(events: list[Seen]) -> None:
    """What a response attributes to a lane, a message or a tool call, it opened first, and closed before the end."""
    assert events[0].type == "RUN_STARTED"
    lanes: set[str] = set()
    messages: set[str] = set()
    for event in events[1:]:
        data = event.data
        lane = data.get("subagentRunId")
        if event.type == "SUBAGENT_STARTED":
            assert lane not in lanes, f"lane {lane} opened twice"
            lanes.add(lane)
        elif lane is not None:
            assert lane in lanes, f"{event.type} for a lane this response did not open"
        if event.type == "TEXT_MESSAGE_START":
            messages.add(data["messageId"])
        elif event.type in ("TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"):
            assert data["messageId"] in messages, f"{event.type} for a message this response did not open"
        if event.type in ("SUBAGENT_FINISHED", "SUBAGENT_ERROR"):
            lanes.discard(lane)
        if event.type == "TEXT_MESSAGE_END":
            messages.discard(data["messageId"])
    if events[-1].type == "RUN_FINISHED":
        assert not lanes and not messages, f"left open at RUN_FINISHED: {lanes | messages}"


def _refused(http: httpx.Client, devhost: DevHostProcess, body: Any, status: int, reason: str, **kwargs: Any) -> None:
    url = kwargs.pop("url", f"{devhost.api}/workflow/{WORKFLOW}/ag-ui")
    if isinstance(body, bytes):
        response = http.post(url, content=body, headers={"Content-Type": "application/json"})
    else:
        response = http.post(url, json=body)
    assert response.status_code == status, (reason, response.status_code, response.text)
    assert reason in response.json()["error"], (reason, response.text)


def _interrupt(events: list[Seen]) -> dict[str, Any]:
    end = events[-1].data
    assert end["type"] == "RUN_FINISHED" and end["outcome"]["type"] == "interrupt", end
    (interrupt,) = end["outcome"]["interrupts"]
    return interrupt


def _lane_texts(events: list[Seen]) -> list[tuple[str, str]]:
    return [(e.data["subagentRunId"], e.data["delta"]) for e in events if e.type == "TEXT_MESSAGE_CONTENT"]


def _stream_texts(http: httpx.Client, devhost: DevHostProcess, instance_id: str) -> list[tuple[str, str]]:
    """The instance's message entries, as its own SSE route gives them, up to its first request for input."""
    texts: list[tuple[str, str]] = []
    url = f"{devhost.api}/workflow/{WORKFLOW}/stream/{instance_id}"
    with connect_sse(http, "GET", url) as source:
        for sse in source.iter_sse():
            if sse.event == "input_requested":
                break
            if sse.event == "message":
                data = json.loads(sse.data)
                texts.append((data["correlation_id"], data["text"]))
    return texts


def _cancel(http: httpx.Client, devhost: DevHostProcess, instance_id: str) -> None:
    response = http.post(f"{devhost.api}/workflow/{WORKFLOW}/cancel/{instance_id}")
    assert response.status_code in (202, 409), response.text


def test_bad_input_gets_a_4xx_with_a_reason(http: httpx.Client, devhost: DevHostProcess, agent_name: str) -> None:
    thread = uuid.uuid4().hex
    _refused(http, devhost, _body(thread, "r", message="x"), 404, "not hosted", url=f"{devhost.api}/workflow/no/ag-ui")
    _refused(http, devhost, b"hello", 400, "Invalid JSON")
    _refused(http, devhost, {"message": "hi"}, 400, "RunAgentInput")
    _refused(http, devhost, _body("a b", "r", message="x"), 400, "threadId")
    _refused(http, devhost, _body(thread, "", message="x"), 400, "runId")
    tools = {**_body(thread, "r", message="x"), "tools": [{"name": "t", "description": "d", "parameters": {}}]}
    _refused(http, devhost, tools, 400, "not supported")
    _refused(http, devhost, _body(thread, "r"), 400, "needs a user message")
    resume = [{"interruptId": "nothing", "status": "resolved", "payload": {"approved": True}}]
    _refused(http, devhost, _body(thread, "r", resume=resume), 404, "nothing to resume")
    chat = http.post(f"{devhost.api}/agents/{agent_name}/run", json={"message": "Hi", "wait_for_response": True})
    assert chat.status_code == 200, chat.text
    _refused(http, devhost, _body(chat.json()["session_id"], "r", message="x"), 409, "chat session")


def test_resumes_are_refused_unless_they_answer_a_pending_interrupt(
    http: httpx.Client, devhost: DevHostProcess
) -> None:
    thread = uuid.uuid4().hex
    first = _post(http, devhost, _body(thread, "run-1", message="Plan 2 days in Vienna in June"))
    interrupt = _interrupt(first)
    status = http.get(f"{devhost.api}/workflow/{WORKFLOW}/status/{thread}").json()
    assert [r["requestId"] for r in status["pendingHumanInputRequests"]] == [interrupt["id"]]

    def resume(interrupt_id: str, payload: Any, status: str = "resolved") -> list[dict]:
        return [{"interruptId": interrupt_id, "status": status, "payload": payload}]

    _refused(http, devhost, _body(thread, "run-x", message="again"), 409, "waits for input")
    _refused(http, devhost, _body(thread, "run-x", resume=resume("unknown", {"approved": True})), 404, "No pending")
    _refused(http, devhost, _body(thread, "run-x", resume=resume("a b", {"approved": True})), 400, "interruptId")
    _refused(http, devhost, _body(thread, "run-x", resume=resume(interrupt["id"], {"approved": "yes"})), 400, "bool")
    _refused(http, devhost, _body(thread, "run-x", resume=resume(interrupt["id"], {"ok": 1})), 400, "Unknown field")
    twice = resume(interrupt["id"], {"approved": True}) * 2
    _refused(http, devhost, _body(thread, "run-x", resume=twice), 400, "one interrupt twice")

    rejected = resume(interrupt["id"], {"approved": False, "feedback": "more museums"})
    second = _interrupt(_post(http, devhost, _body(thread, "run-2", resume=rejected)))
    answered_again = _body(thread, "run-x", resume=resume(interrupt["id"], {"approved": True}))
    _refused(http, devhost, answered_again, 409, "no longer")
    finished = _post(http, devhost, _body(thread, "run-3", resume=resume(second["id"], {"approved": True})))
    assert finished[-1].data["outcome"] == {"type": "success"}
    assert finished[-1].data["result"][0]["rounds"] == 2

    _refused(http, devhost, _body(thread, "run-x", resume=resume(second["id"], {"approved": True})), 409, "has ended")
    _refused(http, devhost, _body(thread, "run-x", message="again"), 409, "has ended")
    # A run posted again re-attaches to its own part of the stream, whatever happened since.
    again = _post(http, devhost, _body(thread, "run-2", resume=rejected))
    assert _interrupt(again)["id"] == second["id"]
    assert _lane_texts(again) == _lane_texts(_post(http, devhost, _body(thread, "run-2", resume=rejected)))


def test_a_run_cut_anywhere_and_re_attached_with_last_event_id_shows_each_lanes_text_once(
    http: httpx.Client, devhost: DevHostProcess
) -> None:
    thread = uuid.uuid4().hex
    body = _body(thread, "run-1", message="Plan 3 days in Lisbon in May for 2 travellers")
    cuts = random.Random(20).choices(range(1, 25), k=40)
    responses: list[list[Seen]] = []
    last_id: str | None = None
    while not responses or responses[-1][-1].type not in ENDS:
        responses.append(_post(http, devhost, body, last_event_id=last_id, limit=cuts[len(responses)]))
        last_id = responses[-1][-1].id
        if len(responses) == 1:  # the researchers are streaming: another run is not started beside this one
            _refused(http, devhost, _body(thread, "run-x", message="again"), 409, "runs already")
    try:
        assert len(responses) > 5, "the run ended before it could be cut"
        shown = [pair for response in responses for pair in _lane_texts(response)]
        assert shown == _stream_texts(http, devhost, thread)
        assert len({lane for lane, _ in shown}) == 3
        interrupt = _interrupt(responses[-1])
        # After the run's end, the run posted again gives its outcome again, and nothing of what follows.
        after_end = _post(http, devhost, body, last_event_id=last_id)
        assert [e.type for e in after_end] == ["RUN_STARTED", "RUN_FINISHED"]
        assert _interrupt(after_end) == interrupt
    finally:
        _cancel(http, devhost, thread)


@pytest.fixture(scope="module")
def two_hosts(devhost_workdir: Path) -> Iterator[tuple[DevHostProcess, DevHostProcess]]:
    """Host A serves HTTP only (no worker); host B shares A's backend and Valkey and runs everything."""
    with host_pair(devhost_workdir, "agui-scale") as pair:
        yield pair


def test_a_run_started_on_one_host_is_re_attached_and_resumed_through_another(
    http: httpx.Client, two_hosts: tuple[DevHostProcess, DevHostProcess]
) -> None:
    host_a, host_b = two_hosts
    thread = uuid.uuid4().hex
    body = _body(thread, "run-1", message="Plan 2 days in Porto in April")
    # Started on A, which runs nothing: B's worker runs the workflow. Cut while the researchers stream.
    cut = _post(http, host_a, body, limit=8)
    assert cut[-1].type not in ENDS, "the run ended before it could be cut"
    rest = _post(http, host_b, body, last_event_id=cut[-1].id)
    interrupt = _interrupt(rest)
    assert _lane_texts(cut) + _lane_texts(rest) == _stream_texts(http, host_a, thread)

    approve = [{"interruptId": interrupt["id"], "status": "resolved", "payload": {"approved": True}}]
    finished = _post(http, host_b, _body(thread, "run-2", resume=approve))
    assert finished[-1].data["outcome"] == {"type": "success"}
    assert finished[-1].data["result"][0]["approved"] is True
    status = http.get(f"{host_a.api}/workflow/{WORKFLOW}/status/{thread}").json()
    assert status["runtimeStatus"] == "Completed"
