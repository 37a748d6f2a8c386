"""Scale-out: host A serves HTTP with no worker; host B, on the same backend and Valkey, runs the entities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.devhost_process import DevHostProcess
from tests.e2e.sse_turns import agent_names, committed_turn, follow_turn, start_turn


@pytest.fixture(scope="module")
def hosts(devhost_workdir: Path) -> Iterator[tuple[DevHostProcess, DevHostProcess]]:
    host_a = DevHostProcess.start(devhost_workdir, args=["--no-worker"], name="scale-a")
    valkey_host, _, valkey_port = host_a.info["valkey"].rpartition(":")
    try:
        host_b = DevHostProcess.start(
            devhost_workdir,
            env={"VALKEY_HOST": valkey_host, "VALKEY_PORT": valkey_port, "SCRIPTED_CHUNK_DELAY_MS": "25"},
            args=["--backend", host_a.info["backend"]],
            name="scale-b",
        )
    except Exception:
        host_a.stop()
        raise
    yield host_a, host_b
    host_b.stop()
    host_a.stop()


def test_reader_on_host_a_follows_a_turn_that_host_b_runs(
    hosts: tuple[DevHostProcess, DevHostProcess], http: httpx.Client
) -> None:
    host_a, host_b = hosts
    assert host_a.info["worker"] is False and host_b.info["worker"] is True
    assert host_b.info["backend"] == host_a.info["backend"]
    assert host_b.info["valkey"] == host_a.info["valkey"]
    agent = agent_names(http, host_a.api)[0]

    # Every call goes to A; only B has a worker, so B's worker is the one that runs the entity.
    session_id, correlation_id = start_turn(http, host_a.api, agent, "first turn: Vienna")
    turn = follow_turn(http, host_a.api, session_id, correlation_id, cut_after=[4])
    committed = committed_turn(http, host_a.api, agent, session_id, correlation_id)
    assert turn.terminal is not None and turn.terminal.event == "done"
    assert turn.text == committed["response"]
    assert "Vienna" in turn.text

    # The session lives in the shared backend: a second turn through A continues it.
    _, second = start_turn(http, host_a.api, agent, "second turn: Graz", session_id)
    turn = follow_turn(http, host_a.api, session_id, second)
    assert turn.text == committed_turn(http, host_a.api, agent, session_id, second)["response"]
    assert committed_turn(http, host_a.api, agent, session_id, second)["message_count"] == 4
    assert "Worker    off (--no-worker)" in host_a.log()
