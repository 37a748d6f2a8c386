"""Turns streamed over real HTTP from a running local host: cuts, resumes, isolation, failures, self-ending streams."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.devhost_process import DevHostProcess
from tests.e2e.sse_turns import FollowedTurn, committed_turn, follow_turn, start_turn


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def assert_seen_once_in_order(turn: FollowedTurn) -> None:
    """Every event id arrived once, in stream order: nothing twice across reconnections."""
    orders = [_entry_order(i) for i in turn.event_ids]
    assert orders == sorted(set(orders)), f"duplicate or out-of-order ids: {turn.event_ids}"


# A cut after N events of a connection; a few per turn, anywhere in an answer of about 30 chunks.
cut_points = st.lists(st.integers(min_value=1, max_value=28), min_size=1, max_size=4)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(turn_cuts=st.lists(cut_points, min_size=2, max_size=2))
def test_multi_turn_conversation_resumed_after_cuts_loses_and_repeats_nothing(
    devhost: DevHostProcess, http: httpx.Client, agent_name: str, turn_cuts: list[list[int]]
) -> None:
    session_id = None
    for number, cuts in enumerate(turn_cuts, start=1):
        message = f"turn {number}: a day in Lyon"
        session_id, correlation_id = start_turn(http, devhost.api, agent_name, message, session_id)
        turn = follow_turn(http, devhost.api, session_id, correlation_id, cut_after=cuts)

        assert turn.terminal is not None and turn.terminal.event == "done"
        assert_seen_once_in_order(turn)
        committed = committed_turn(http, devhost.api, agent_name, session_id, correlation_id)
        assert committed["status"] == "completed"
        assert turn.text == committed["response"]
        assert f"turn {number}" in turn.text
        # The conversation goes on in the same session: one request and one response per turn so far.
        assert committed["message_count"] == 2 * number


def test_two_sessions_streaming_at_once_stay_isolated(
    devhost: DevHostProcess, http: httpx.Client, agent_name: str
) -> None:
    messages = {"alpha": "alpha wants museums in Oslo", "beta": "beta wants beaches in Nice"}
    started = {key: start_turn(http, devhost.api, agent_name, text) for key, text in messages.items()}

    def follow(key: str) -> FollowedTurn:
        session_id, correlation_id = started[key]
        with httpx.Client(timeout=30) as client:
            return follow_turn(client, devhost.api, session_id, correlation_id, cut_after=[5, 7])

    with ThreadPoolExecutor(max_workers=2) as pool:
        turns = dict(zip(messages, pool.map(follow, messages), strict=True))

    for key, turn in turns.items():
        other = "beta" if key == "alpha" else "alpha"
        session_id, correlation_id = started[key]
        committed = committed_turn(http, devhost.api, agent_name, session_id, correlation_id)
        assert turn.text == committed["response"]
        assert key in turn.text and other not in turn.text
        assert_seen_once_in_order(turn)
    assert started["alpha"][0] != started["beta"][0]


def test_failing_turn_streams_an_error_event_and_commits_failed(
    devhost: DevHostProcess, http: httpx.Client, agent_name: str
) -> None:
    session_id, correlation_id = start_turn(http, devhost.api, agent_name, "plan a trip #fail")
    turn = follow_turn(http, devhost.api, session_id, correlation_id, cut_after=[2])

    assert turn.terminal is not None and turn.terminal.event == "error"
    assert turn.terminal.data  # says what went wrong
    committed = committed_turn(http, devhost.api, agent_name, session_id, correlation_id)
    assert committed["status"] == "failed"
    assert committed.get("error")


@pytest.fixture(scope="module")
def short_lived_streams_host(devhost_workdir: Path) -> Iterator[DevHostProcess]:
    """A host whose stream responses end themselves after half a second (Azure cuts at ~230 s)."""
    host = DevHostProcess.start(
        devhost_workdir,
        env={"SCRIPTED_CHUNK_DELAY_MS": "60", "STREAM_MAX_DURATION_SECONDS": "0.5"},
        name="short-streams",
    )
    yield host
    host.stop()


def test_stream_ending_itself_at_max_duration_resumes_seamlessly(
    short_lived_streams_host: DevHostProcess, http: httpx.Client
) -> None:
    api = short_lived_streams_host.api
    agent = http.get(f"{api}/health").json()["agents"][0]["name"]
    session_id, correlation_id = start_turn(http, api, agent, "a long answer about Porto")
    turn = follow_turn(http, api, session_id, correlation_id)

    # A turn of ~1.8 s over responses capped at 0.5 s: the server ended some, each with a retry hint.
    assert turn.self_endings >= 2
    assert len(turn.retry_hints) >= turn.self_endings
    assert turn.terminal is not None and turn.terminal.event == "done"
    assert_seen_once_in_order(turn)
    committed = committed_turn(http, api, agent, session_id, correlation_id)
    assert turn.text == committed["response"]
