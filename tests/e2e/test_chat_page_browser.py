"""The chat page in Debian's Chromium (headless, through Playwright): a turn survives a network cut
mid-answer, and Stop ends a turn with its partial answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.e2e.chromium import chromium_or_skip, launched_chromium
from tests.e2e.devhost_process import PROJECT_ROOT, DevHostProcess
from tests.e2e.sse_turns import committed_turn
from tests.e2e.tcp_cut_proxy import TcpCutProxy

SCREENSHOT = PROJECT_ROOT / "test-output" / "e2e" / "chat_page_after_network_cut.png"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def chromium() -> str:
    """The Chromium executable; without one the test skips (a fresh machine) or, under ``CI=true``, fails.

    Autouse, so it runs before the host is started: a missing browser costs nothing.
    """
    return chromium_or_skip()


@pytest.fixture(scope="module")
def page_host(devhost_workdir: Path) -> Iterator[DevHostProcess]:
    """A host whose answers take a few seconds (about 30 chunks, 120 ms apart), long enough to cut one."""
    host = DevHostProcess.start(devhost_workdir, env={"SCRIPTED_CHUNK_DELAY_MS": "120"}, name="browser")
    yield host
    host.stop()


@pytest.fixture
def proxy(page_host: DevHostProcess) -> Iterator[TcpCutProxy]:
    cut_proxy = TcpCutProxy(page_host.port)
    yield cut_proxy
    cut_proxy.close()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with launched_chromium(chromium) as launched:
        yield launched


def _turn(page: Page, index: int, expression: str) -> object:
    return page.evaluate(f"(() => {{ const turn = window.chatState.turns[{index}]; return {expression}; }})()")


def test_page_resumes_after_a_network_cut_and_shows_the_committed_answer_once(
    browser: Browser, proxy: TcpCutProxy, page_host: DevHostProcess
) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    api_calls: list[tuple[str, dict[str, str]]] = []
    page.on(
        "request",
        lambda request: api_calls.append((request.url, request.headers)) if "/api/chat" not in request.url else None,
    )
    page.goto(f"http://127.0.0.1:{proxy.port}/api/chat?code=local-test-key")
    page.wait_for_function("window.chatState.agent !== null")

    page.fill("#message", "Three days in Lisbon, please")
    page.click("#send")
    page.wait_for_function("window.chatState.turns.length === 1 && window.chatState.turns[0].events >= 4")

    # The link drops mid-answer: open connections are reset and the browser goes offline for a while.
    assert proxy.cut() >= 1
    context.set_offline(True)
    page.wait_for_function("document.querySelector('#connection').textContent.includes('lost')")
    events_during_outage = _turn(page, 0, "turn.events")
    page.wait_for_timeout(1500)
    context.set_offline(False)
    proxy.restore()

    page.wait_for_function("window.chatState.turns[0].status !== null", timeout=60_000)
    session_id, correlation_id = _turn(page, 0, "[turn.sessionId, turn.correlationId]")
    agent = page.evaluate("window.chatState.agent")
    with httpx.Client(timeout=30) as client:
        committed = committed_turn(client, page_host.api, agent, session_id, correlation_id)

    assert committed["status"] == "completed"
    assert _turn(page, 0, "turn.status") == "completed"
    # The whole answer, exactly once: a chunk sent twice or lost at the seam would show here.
    assert _turn(page, 0, "turn.text") == committed["response"]
    # Rendered as Markdown: the list and the emphasis of the answer are elements, not asterisks.
    answer = page.locator(".turn .answer").first
    assert answer.locator("li").count() == 3 and answer.locator("strong").count() >= 3
    assert "**" not in answer.inner_text()
    assert _turn(page, 0, "turn.reconnects") >= 1
    assert _turn(page, 0, "turn.events") > events_during_outage
    assert "reconnected" in page.locator(".turn .meta").first.inner_text()
    assert "committed: completed" in page.locator(".turn .meta").first.inner_text()

    # A failing turn in the same conversation shows the error and the failed commit.
    page.fill("#message", "and now #fail")
    page.click("#send")
    page.wait_for_function("window.chatState.turns.length === 2 && window.chatState.turns[1].status !== null")
    assert _turn(page, 1, "turn.outcome") == "error"
    assert _turn(page, 1, "turn.status") == "failed"
    assert _turn(page, 1, "turn.sessionId") == session_id

    # No secret in a URL the page requests (host request logs record URLs): the function key goes in
    # the x-functions-key header, a stream's token in the Authorization header of the fetch that reads it.
    streams = [call for call in api_calls if "/api/streams/" in call[0]]
    others = [call for call in api_calls if "/api/streams/" not in call[0]]
    assert streams and others
    assert all("token=" not in url and "code=" not in url for url, _ in api_calls), [url for url, _ in api_calls]
    assert all(headers.get("authorization", "").startswith("Bearer ") for _, headers in streams), streams
    assert all(headers.get("x-functions-key") == "local-test-key" for _, headers in others), others

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"\nchat page screenshot: {SCREENSHOT}")
    context.close()


def test_stop_ends_the_turn_with_its_partial_answer_and_the_conversation_goes_on(
    browser: Browser, page_host: DevHostProcess
) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    page.goto(f"{page_host.url}/api/chat?code=local-test-key")
    page.wait_for_function("window.chatState.agent !== null")

    page.fill("#message", "Five days in Kyoto")
    page.click("#send")
    page.wait_for_function("window.chatState.turns.length === 1 && window.chatState.turns[0].events >= 4")
    assert page.locator("#stop").is_visible()
    page.click("#stop")
    page.wait_for_function("window.chatState.turns[0].status !== null", timeout=30_000)

    session_id, correlation_id = _turn(page, 0, "[turn.sessionId, turn.correlationId]")
    agent = page.evaluate("window.chatState.agent")
    with httpx.Client(timeout=30) as client:
        status = client.get(f"{page_host.api}/agents/{agent}/sessions/{session_id}/turns/{correlation_id}").json()
    assert status["status"] == "cancelled"
    assert _turn(page, 0, "turn.outcome") == "cancelled"
    assert _turn(page, 0, "turn.status") == "cancelled"
    # The card shows exactly the committed partial answer, and says it was stopped.
    assert _turn(page, 0, "turn.text") == status["response"]
    assert status["response"] and "Have a great trip!" not in status["response"], "stopped in its middle"
    assert "stopped" in page.locator(".turn .meta").first.inner_text()
    assert page.locator("#stop").is_hidden()

    # The next message in the same conversation is answered in full.
    page.fill("#message", "and Osaka?")
    page.click("#send")
    page.wait_for_function("window.chatState.turns.length === 2 && window.chatState.turns[1].status !== null")
    assert _turn(page, 1, "turn.status") == "completed"
    assert _turn(page, 1, "turn.sessionId") == session_id

    shot = SCREENSHOT.with_name("chat_page_after_stop.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nchat page screenshot: {shot}")
    context.close()


def test_a_reload_restores_the_conversation_and_resumes_the_running_turn(
    browser: Browser, page_host: DevHostProcess
) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.goto(f"{page_host.url}/api/chat?code=local-test-key")
    page.wait_for_function("window.chatState.agent !== null")
    page.fill("#message", "Two days in Ghent")
    page.click("#send")
    page.wait_for_function("window.chatState.turns.length === 1 && window.chatState.turns[0].status === 'completed'")
    first_text = _turn(page, 0, "turn.text")
    page.fill("#message", "and Bruges?")
    page.click("#send")
    page.wait_for_function("window.chatState.turns.length === 2 && window.chatState.turns[1].events >= 4")
    assert "#session=" in page.url

    page.reload()  # mid-turn
    page.wait_for_function("window.chatState.turns.length === 2")
    assert _turn(page, 0, "turn.text") == first_text
    assert _turn(page, 0, "turn.status") == "completed"
    assert page.locator(".turn .user").nth(1).inner_text() == "and Bruges?"
    page.wait_for_function("window.chatState.turns[1].status === 'completed'", timeout=30_000)
    session_id, correlation_id = _turn(page, 1, "[turn.sessionId, turn.correlationId]")
    agent = page.evaluate("window.chatState.agent")
    with httpx.Client(timeout=30) as client:
        committed = committed_turn(client, page_host.api, agent, session_id, correlation_id)
    assert _turn(page, 1, "turn.text") == committed["response"]

    # A second tab with the same address shows the same conversation.
    other = context.new_page()
    other.goto(page.url)
    other.wait_for_function("window.chatState.turns.length === 2")
    assert other.evaluate("window.chatState.turns.map((t) => t.text)") == [first_text, committed["response"]]
    shot = SCREENSHOT.with_name("chat_page_after_reload.png")
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nchat page screenshot: {shot}")
    context.close()


def test_markup_from_the_user_or_the_model_is_shown_never_run(browser: Browser, page_host: DevHostProcess) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    page.goto(f"{page_host.url}/api/chat?code=local-test-key")
    page.wait_for_function("window.chatState.agent !== null")
    # The scripted model quotes the message in its answer: the payload reaches the page from both.
    payload = (
        "<img src=x onerror=\"window.__pwned='img'\"> [click](javascript:window.__pwned='link') "
        "<script>window.__pwned='script'</script> **bold**"
    )
    page.fill("#message", payload)
    page.click("#send")
    page.wait_for_function("window.chatState.turns.length === 1 && window.chatState.turns[0].status === 'completed'")
    page.wait_for_timeout(300)

    assert page.evaluate("window.__pwned") is None
    turn = page.locator(".turn").first
    assert turn.locator("img, script").count() == 0
    assert turn.locator("a").count() == 0, "a javascript: link never becomes a link"
    assert "<img src=x" in turn.locator(".user").inner_text()
    assert "<img src=x" in turn.locator(".answer").inner_text()
    assert turn.locator(".answer strong").count() >= 1
    shot = SCREENSHOT.with_name("chat_page_markup_shown.png")
    page.screenshot(path=str(shot), full_page=True)
    context.close()


def test_tool_calls_show_collapsed_live_and_after_a_reload(browser: Browser, page_host: DevHostProcess) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.goto(f"{page_host.url}/api/chat?code=local-test-key")
    page.wait_for_function("window.chatState.agent !== null")
    page.fill("#message", "Three days in Lisbon in May?")
    page.click("#send")
    # Live: the call shows before the answer is complete.
    page.wait_for_function("window.chatState.turns.length === 1 && window.chatState.turns[0].tools.length === 1")
    assert _turn(page, 0, "turn.status") != "completed", "the tool call showed only at the end"
    page.wait_for_function("window.chatState.turns[0].status === 'completed'", timeout=30_000)
    tool = page.locator(".turn .tools details").first
    assert tool.inner_text().startswith("Called get_destination_weather: Lisbon, May")
    assert tool.get_attribute("open") is None, "tool calls are collapsed by default"
    assert not page.locator(".turn .tools .tool-result").first.is_visible()
    tool.locator("summary").click()
    assert page.locator(".turn .tools .tool-result").first.inner_text() == "Lisbon in May: sunny, 20 °C."

    page.reload()
    page.wait_for_function("window.chatState.turns.length === 1 && window.chatState.turns[0].status === 'completed'")
    restored = page.locator(".turn .tools details").first
    assert restored.get_attribute("open") is None
    assert restored.locator("summary").inner_text() == "Called get_destination_weather: Lisbon, May"
    assert _turn(page, 0, "turn.tools[0].result") == "Lisbon in May: sunny, 20 °C."
    context.close()
