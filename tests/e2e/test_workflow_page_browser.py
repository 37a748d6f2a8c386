"""The workflow page in Debian's Chromium (headless, through Playwright) against a local host over real HTTP:
the agents' lanes fill live side by side, Request changes brings a revised draft, Approve shows the plan,
a reload restores the instance, a network cut resumes it, Cancel and a failure end it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from playwright.sync_api import Browser, BrowserContext, Page

from tests.e2e.chromium import chromium_or_skip, launched_chromium
from tests.e2e.devhost_process import PROJECT_ROOT, DevHostProcess
from tests.e2e.tcp_cut_proxy import TcpCutProxy

WORKFLOW = "trip_planner"
KEY = "local-test-key"
SCREENSHOTS = PROJECT_ROOT / "test-output" / "e2e"
RESEARCHERS = ("DestinationResearcher", "BudgetPlanner")
WRITER = "PlanWriter"
WORKFLOW_ENDS = ("workflow_completed", "workflow_failed", "workflow_cancelled")

pytestmark = pytest.mark.browser

# The lanes as the page shows them, read from the DOM: per agent, each call's text and status.
LANES_IN_DOM = """[...document.querySelectorAll('.lane')].map((lane) => ({
  agent: lane.dataset.agent,
  steps: [...lane.querySelectorAll('.step')].map((step) => ({
    chars: step.querySelector('.text').innerText.length,
    status: step.querySelector('.step-head .badge').textContent,
  })),
}))"""

# Samples of the lanes every 50 ms, taken in the page from the moment the workflow is started.
START_SAMPLING = f"""window.__samples = [];
window.__sampler = setInterval(() => window.__samples.push({LANES_IN_DOM}), 50);"""


@pytest.fixture(scope="module", autouse=True)
def chromium() -> str:
    """The Chromium executable; without one the test skips (a fresh machine) or, under ``CI=true``, fails."""
    return chromium_or_skip()


@pytest.fixture(scope="module")
def page_host(devhost_workdir: Path) -> Iterator[DevHostProcess]:
    """A host whose agents answer in about 3 s each (about 30 chunks, 100 ms apart): long enough to watch."""
    host = DevHostProcess.start(devhost_workdir, env={"SCRIPTED_CHUNK_DELAY_MS": "100"}, name="workflow-page")
    yield host
    host.stop()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with launched_chromium(chromium) as launched:
        yield launched


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1200, "height": 900})
    yield opened
    opened.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client


def _open(context: BrowserContext, base_url: str) -> Page:
    page = context.new_page()
    page.goto(f"{base_url}/api/workflow/{WORKFLOW}/page?code={KEY}")
    page.wait_for_function("window.workflowState !== undefined")
    return page


def _start(page: Page, message: str) -> str:
    page.fill("#message", message)
    page.click("#start")
    page.wait_for_function("window.workflowState.instanceId !== null")
    return str(page.evaluate("window.workflowState.instanceId"))


def _state(page: Page, expression: str) -> Any:
    return page.evaluate(f"(() => {{ const s = window.workflowState; return {expression}; }})()")


def _lane_texts(page: Page) -> dict[str, str]:
    """Each step's text as the page holds it, by correlation id."""
    return _state(page, "Object.fromEntries(Object.values(s.steps).map((step) => [step.correlationId, step.text]))")


def _wait_for_draft(page: Page, round_: int) -> None:
    page.wait_for_function(
        f"window.workflowState.pending !== null && window.workflowState.pending.round === {round_}", timeout=60_000
    )


def _status(http: httpx.Client, api: str, instance_id: str) -> dict[str, Any]:
    response = http.get(f"{api}/workflow/{WORKFLOW}/status/{instance_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _stream_texts(
    http: httpx.Client, api: str, instance_id: str, until: Callable[[str, dict[str, Any]], bool]
) -> dict[str, str]:
    """Each step's text in the instance's stream (read from its start, through the keyed route) up to ``until``."""
    texts: dict[str, str] = {}
    with connect_sse(http, "GET", f"{api}/workflow/{WORKFLOW}/stream/{instance_id}") as source:
        assert source.response.status_code == 200
        for sse in source.iter_sse():
            if not sse.data:
                continue
            data = json.loads(sse.data)
            if sse.event in ("message", "replace", "step_started") and data.get("correlation_id"):
                before = texts.get(data["correlation_id"], "") if sse.event != "replace" else ""
                texts[data["correlation_id"]] = before + data.get("text", "")
            if until(sse.event, data) or sse.event in WORKFLOW_ENDS:
                break
    return texts


def _until_request(request_id: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda event, data: event == "input_requested" and data.get("request_id") == request_id


def _screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_lanes_fill_live_side_by_side_then_request_changes_and_approve_show_the_plan(
    context: BrowserContext, page_host: DevHostProcess, http: httpx.Client
) -> None:
    requests: list[tuple[str, dict[str, str]]] = []
    context.on("request", lambda request: requests.append((request.url, request.headers)))
    page = _open(context, page_host.url)
    page.evaluate(START_SAMPLING)
    instance_id = _start(page, "Three days in Lisbon in May for 2")
    assert f"#instance={instance_id}" in page.url

    _wait_for_draft(page, 1)
    samples: list[list[dict[str, Any]]] = page.evaluate("clearInterval(window.__sampler), window.__samples")
    lanes = [{lane["agent"]: lane["steps"][0] for lane in sample if lane["steps"]} for sample in samples]
    # Live, token by token: each researcher's lane shows many lengths while it runs, not the answer at once.
    for agent in RESEARCHERS:
        growing = {lane[agent]["chars"] for lane in lanes if agent in lane and lane[agent]["status"] == "running"}
        assert len(growing) >= 5, (agent, sorted(growing))
    # Side by side: both lanes have text before the first of them ends.
    first_end = next(
        i for i, lane in enumerate(lanes) if any(lane.get(a, {}).get("status") == "completed" for a in RESEARCHERS)
    )
    assert first_end > 0
    assert all(lanes[first_end - 1].get(agent, {}).get("chars", 0) > 0 for agent in RESEARCHERS), lanes[first_end - 1]

    # The draft shown is the one the workflow asks about, and every lane holds its stream's text exactly once.
    status = _status(http, page_host.api, instance_id)
    first_request = status["pendingHumanInputRequests"][0]
    assert _state(page, "s.pending.draft") == first_request["requestData"]["draft"]
    assert page.locator("#approval").is_visible() and page.locator("#draft strong").count() >= 1
    until_first_request = _until_request(first_request["requestId"])
    assert _lane_texts(page) == _stream_texts(http, page_host.api, instance_id, until_first_request)
    agents = _state(page, "s.lanes.map((lane) => lane.agent)")
    assert set(agents[:2]) == set(RESEARCHERS) and agents[2:] == [WRITER]
    _screenshot(page, "workflow_page_waiting_for_approval.png")

    # Request changes with feedback: the writer runs again and the revised draft comes with it.
    page.fill("#feedback", "more time at the food markets")
    page.click("#request-changes")
    page.wait_for_function("window.workflowState.pending === null || window.workflowState.pending.round === 2")
    _wait_for_draft(page, 2)
    assert "more time at the food markets" in _state(page, "s.pending.draft")
    assert _state(page, "s.lanes.find((lane) => lane.agent === 'PlanWriter').steps.length") == 2
    assert page.locator("#reviews li").all_inner_texts() == ["Changes requested: more time at the food markets"]
    revised = _state(page, "s.pending.draft")

    # Approve: the workflow completes and the page shows the approved revision as the plan.
    page.click("#approve")
    page.wait_for_function("window.workflowState.outcome !== null", timeout=30_000)
    status = _status(http, page_host.api, instance_id)
    assert status["runtimeStatus"] == "Completed"
    assert _state(page, "[s.outcome, s.plan, s.approved, s.rounds]") == ["completed", revised, True, 2]
    assert status["output"][0]["plan"] == revised
    assert page.locator("#outcome").get_attribute("data-outcome") == "completed"
    assert "the approved plan" in page.locator("#outcome-title").inner_text()
    assert page.locator("#approval").is_hidden() and page.locator("#cancel").is_hidden()
    page.wait_for_function("window.workflowState.streamEnded")
    lanes_shown = _lane_texts(page)
    assert lanes_shown == _stream_texts(http, page_host.api, instance_id, lambda *_: False)
    _screenshot(page, "workflow_page_completed.png")

    # A reload after the end restores the lanes and the outcome (through the run's stream_url, kept by this tab)...
    page.reload()
    page.wait_for_function("window.workflowState.streamEnded", timeout=30_000)
    assert _state(page, "[s.outcome, s.plan, s.route]") == ["completed", revised, "token"]
    assert _lane_texts(page) == lanes_shown
    assert page.locator("#reviews li").all_inner_texts() == [
        "Changes requested: more time at the food markets",
        "Approved.",
    ]
    # ...and so does another tab with the same address, which follows the keyed stream route instead.
    other = context.new_page()
    other.goto(page.url)
    other.wait_for_function("window.workflowState && window.workflowState.streamEnded", timeout=30_000)
    assert _state(other, "[s.outcome, s.plan, s.route]") == ["completed", revised, "key"]
    assert _lane_texts(other) == lanes_shown

    # No secret in a URL the page requests: the key in x-functions-key, the stream token as a Bearer token.
    api_calls = [(url, headers) for url, headers in requests if "/page" not in url]
    assert all("token=" not in url and "code=" not in url for url, _ in api_calls), [url for url, _ in api_calls]
    streams = [headers for url, headers in api_calls if "/api/streams/" in url]
    keyed = [headers for url, headers in api_calls if "/api/streams/" not in url]
    assert streams and all(headers.get("authorization", "").startswith("Bearer ") for headers in streams)
    assert keyed and all(headers.get("x-functions-key") == KEY for headers in keyed)


def test_a_network_cut_resumes_the_lanes_and_a_reload_while_waiting_restores_the_draft(
    context: BrowserContext, page_host: DevHostProcess, http: httpx.Client
) -> None:
    proxy = TcpCutProxy(page_host.port)
    try:
        page = _open(context, f"http://127.0.0.1:{proxy.port}")
        instance_id = _start(page, "Four days in Porto for 3")
        page.wait_for_function(
            "Object.values(window.workflowState.steps).filter((step) => step.text.length > 40).length >= 2"
        )
        # The link drops while both researchers stream: connections reset, the browser offline a while.
        assert proxy.cut() >= 1
        context.set_offline(True)
        page.wait_for_function("document.querySelector('#connection').textContent.includes('lost')")
        page.wait_for_timeout(1500)
        context.set_offline(False)
        proxy.restore()
        _wait_for_draft(page, 1)
        assert _state(page, "s.reconnects") >= 1
        request = _status(http, page_host.api, instance_id)["pendingHumanInputRequests"][0]
        before_reload = _lane_texts(page)
        # Exactly once across the cut: what the page holds is what the stream holds.
        assert before_reload == _stream_texts(http, page_host.api, instance_id, _until_request(request["requestId"]))
        assert len(before_reload) == 3

        # A reload while the workflow waits: the draft is back from the status, the lanes from the stream.
        page.reload()
        _wait_for_draft(page, 1)
        page.wait_for_function(
            "Object.values(window.workflowState.steps).filter((step) => step.status === 'completed').length === 3",
            timeout=30_000,
        )
        assert _lane_texts(page) == before_reload
        assert _state(page, "[s.pending.requestId, s.route]") == [request["requestId"], "token"]
        assert page.locator("#draft").inner_text().startswith("You asked:")
        assert page.locator("#approval").is_visible() and page.locator("#cancel").is_visible()
        _screenshot(page, "workflow_page_reloaded_while_waiting.png")

        # Another tab on the same instance waits with the same draft...
        other = context.new_page()
        other.goto(page.url)
        other.wait_for_function("window.workflowState && window.workflowState.pending !== null", timeout=30_000)

        # ...and when the reloaded page approves, the other tab's draft goes and the plan shows there too.
        page.click("#approve")
        page.wait_for_function("window.workflowState.outcome === 'completed'", timeout=30_000)
        assert _state(page, "[s.plan, s.rounds]") == [request["requestData"]["draft"], 1]
        other.wait_for_function("window.workflowState.outcome === 'completed'", timeout=30_000)
        assert _state(other, "[s.plan, s.reviews.length]") == [request["requestData"]["draft"], 1]
        assert other.locator("#approval").is_hidden()
    finally:
        proxy.close()


def test_cancel_while_the_agents_stream_ends_the_workflow_cancelled(
    context: BrowserContext, page_host: DevHostProcess, http: httpx.Client
) -> None:
    page = _open(context, page_host.url)
    instance_id = _start(page, "A week in Rome")
    page.wait_for_function(
        "Object.values(window.workflowState.steps).filter((step) => step.text.length > 20).length >= 2"
    )
    assert page.locator("#cancel").is_visible()
    page.click("#cancel")
    page.wait_for_function("window.workflowState.outcome !== null", timeout=15_000)

    assert _state(page, "s.outcome") == "cancelled"
    assert page.locator("#outcome").get_attribute("data-outcome") == "cancelled"
    assert page.locator("#cancel").is_hidden()
    status = _status(http, page_host.api, instance_id)
    assert status["runtimeStatus"] in ("Terminated", "Canceled")
    # The researchers were stopped mid-answer: their lanes end cancelled, with the text they had; a step
    # the workflow may have started on its way out (the writer) is cancelled too, none goes on.
    steps = _state(page, "Object.values(s.steps).map((step) => [step.agent, step.status])")
    assert {agent for agent, _ in steps} >= set(RESEARCHERS)
    assert all(status == "cancelled" for _, status in steps), steps
    researched = _state(page, "s.lanes.filter((lane) => lane.agent !== 'PlanWriter').map((lane) => lane.steps[0].text)")
    assert all(text and "Have a great trip!" not in text for text in researched), researched
    page.wait_for_function("window.workflowState.streamEnded")
    assert _lane_texts(page) == _stream_texts(http, page_host.api, instance_id, lambda *_: False)

    page.reload()
    page.wait_for_function("window.workflowState.streamEnded", timeout=30_000)
    assert _state(page, "s.outcome") == "cancelled"
    assert sorted(_state(page, "Object.values(s.steps).map((step) => [step.agent, step.status])")) == sorted(steps)
    _screenshot(page, "workflow_page_cancelled.png")


def test_a_failing_agent_fails_the_workflow_and_the_page_shows_the_error(
    context: BrowserContext, page_host: DevHostProcess, http: httpx.Client
) -> None:
    page = _open(context, page_host.url)
    instance_id = _start(page, "Two days in Oslo #fail")
    page.wait_for_function("window.workflowState.outcome !== null", timeout=60_000)

    status = _status(http, page_host.api, instance_id)
    assert status["runtimeStatus"] == "Failed"
    assert _state(page, "s.outcome") == "failed"
    assert _state(page, "s.error") and page.locator("#plan").inner_text() == _state(page, "s.error")
    assert "failed" in _state(page, "Object.values(s.steps).map((step) => step.status)")
