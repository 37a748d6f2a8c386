"""The live path through a running local host: timeliness after pauses, slow Valkey replies, a Valkey outage.

Real processes throughout: ``python -m devhost`` with its durable worker, a valkey-server the test
starts, kills and restarts, and a loopback proxy that holds Valkey's replies back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.e2e.devhost_process import DevHostProcess
from tests.e2e.sse_turns import FollowedTurn, agent_names, committed_turn, follow_turn, start_turn
from tests.eventually import eventually_blocking
from tests.slow_reply_proxy import SlowReplyProxy
from tests.valkey_servers import ValkeyProcess

BLOCK_MS = 2000  # the live feed's blocking read window; the pauses below sweep all of it


@pytest.fixture(scope="module")
def valkey() -> Iterator[ValkeyProcess]:
    server = ValkeyProcess().start()
    yield server
    server.stop()


def _host(workdir: Path, name: str, port: int, **env: str) -> DevHostProcess:
    settings = {"VALKEY_HOST": "127.0.0.1", "VALKEY_PORT": str(port), "STREAM_HEARTBEAT_SECONDS": "1", **env}
    return DevHostProcess.start(workdir, env=settings, name=name)


def _first_message_latency(client: httpx.Client, api: str, agent: str, session_id: str | None) -> tuple[float, str]:
    body = {"message": "a quick one"} | ({"session_id": session_id} if session_id else {})
    started = time.monotonic()
    with connect_sse(client, "POST", f"{api}/agents/{agent}/stream", json=body) as source:
        assert source.response.status_code == 200
        session = source.response.headers["x-session-id"]
        first = None
        for sse in source.iter_sse():
            if sse.event == "message" and sse.data and first is None:
                first = time.monotonic() - started
            if sse.event in ("done", "error"):
                assert sse.event == "done"
                break
    assert first is not None
    return first, session


def test_a_new_turn_streams_at_once_after_any_pause(
    devhost_workdir: Path, valkey: ValkeyProcess, http: httpx.Client
) -> None:
    host = _host(
        devhost_workdir, "pauses", valkey.port, VALKEY_READ_BLOCK_MS=str(BLOCK_MS), SCRIPTED_CHUNK_DELAY_MS="5"
    )
    try:
        agent = agent_names(http, host.api)[0]
        _, session = _first_message_latency(http, host.api, agent, None)  # warm up the worker and the feed
        slow = []
        for step in range(10):
            pause = step * BLOCK_MS / 1000 / 8
            for shared in (False, True):
                time.sleep(pause)
                latency, session = _first_message_latency(http, host.api, agent, session if shared else None)
                # About 20 ms here normally; a reader that waits for the feed's read window takes seconds.
                if latency > 0.5:
                    slow.append((round(pause, 2), shared, round(latency, 2)))
    finally:
        host.stop()
    assert not slow, f"first message later than 0.5 s after (pause, shared session, latency): {slow}"


def _follow_in_thread(api: str, session_id: str, correlation_id: str) -> tuple[FollowedTurn, threading.Thread]:
    """A reader following the turn live, in a thread; the turn object fills in as events arrive."""
    turn = FollowedTurn()

    def follow() -> None:
        with httpx.Client(timeout=httpx.Timeout(120, connect=5)) as client:
            follow_turn(client, api, session_id, correlation_id, turn=turn)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return turn, thread


def _assert_shows_committed_text_once(name: str, turn: FollowedTurn, committed: str) -> None:
    assert turn.terminal is not None and turn.terminal.event == "done", f"{name}: {turn.terminal}"
    assert turn.text == committed, f"{name} shows {turn.text[:120]!r}"
    # Only chunks carry ids of their own: an event that ends a turn from its committed outcome has
    # none, and an SSE client reports the last id seen for it.
    ids = [tuple(map(int, e.id.split("-"))) for e in turn.events if e.event == "message"]
    assert ids == sorted(set(ids)), f"{name} got a chunk twice: {[(e.event, e.id) for e in turn.events]}"


def test_slow_valkey_replies_mid_turn_show_every_chunk_once(
    devhost_workdir: Path, valkey: ValkeyProcess, http: httpx.Client
) -> None:
    proxy = SlowReplyProxy(valkey.port)
    host = _host(devhost_workdir, "slow-replies", proxy.port, SCRIPTED_CHUNK_DELAY_MS="60")
    try:
        agent = agent_names(http, host.api)[0]
        session_id, correlation_id = start_turn(http, host.api, agent, "Four days in Porto")
        live, follower = _follow_in_thread(host.api, session_id, correlation_id)
        _wait_for_events(live, 3)
        proxy.hold_replies(1.3)  # a little over the 1 s request timeout
        time.sleep(1.0)
        proxy.hold_replies(0)
        committed = committed_turn(http, host.api, agent, session_id, correlation_id)["response"]
        follower.join(60)
        from_start = follow_turn(http, host.api, session_id, correlation_id)
    finally:
        host.stop()
        proxy.close()
    raw = valkey.command("XRANGE", f"agent-stream:{session_id}", "-", "+")
    entries = [dict(zip(e[1][::2], e[1][1::2], strict=True)) for e in raw]  # type: ignore[union-attr]
    # Writes timed out and were retried; Valkey ignored what it had applied: the stream holds each
    # entry once, so a reader of the reference schema (every text until done) shows the answer once.
    assert proxy.replies_held
    sequences = [fields["sequence"] for fields in entries]
    assert len(sequences) == len(set(sequences)), "an entry was appended twice"
    done = next(i for i, fields in enumerate(entries) if fields.get("done") == "true")
    assert "".join(fields["text"] for fields in entries[:done]) == committed
    _assert_shows_committed_text_once("live reader", live, committed)
    _assert_shows_committed_text_once("reader from the start", from_start, committed)


@pytest.mark.timeout(240)
def test_valkey_down_for_8_s_mid_turn_every_reader_ends_with_the_committed_text(
    devhost_workdir: Path, http: httpx.Client
) -> None:
    server = ValkeyProcess().start()
    env = {"SCRIPTED_CHUNK_DELAY_MS": "100", "VALKEY_READ_RECONCILE_SECONDS": "2"}
    host = _host(devhost_workdir, "outage", server.port, **env)
    try:
        agent = agent_names(http, host.api)[0]
        session_id, correlation_id = start_turn(http, host.api, agent, "Two weeks in Japan")
        live, follower = _follow_in_thread(host.api, session_id, correlation_id)
        _wait_for_events(live, 5)
        cursor_before_outage = live.last_event_id
        server.stop()
        time.sleep(8)
        server.start()
        committed = committed_turn(http, host.api, agent, session_id, correlation_id, timeout=60)
        committed_at = time.monotonic()
        follower.join(30)
        live_ended = time.monotonic()
        resumed = follow_turn(http, host.api, session_id, correlation_id, resume_from=cursor_before_outage)
        from_start = follow_turn(http, host.api, session_id, correlation_id)
        readers_after_took = time.monotonic() - live_ended
    finally:
        host.stop()
        server.stop()
    assert committed["status"] == "completed"
    text = committed["response"]
    assert not follower.is_alive(), "the live reader is still waiting"
    _assert_shows_committed_text_once("live reader", live, text)
    _assert_shows_committed_text_once("reader resumed from before the outage", resumed, text)
    _assert_shows_committed_text_once("reader from the start", from_start, text)
    # None waits for the idle timeout (120 s): each ends within a few reconcile periods (2 s).
    assert live_ended - committed_at < 8
    assert readers_after_took < 8


def _wait_for_events(turn: FollowedTurn, count: int, timeout: float = 20) -> None:
    eventually_blocking(
        lambda: len(turn.event_ids) >= count,
        timeout=timeout,
        interval=0.02,
        message=lambda: f"only {len(turn.event_ids)} of {count} events",
    )
