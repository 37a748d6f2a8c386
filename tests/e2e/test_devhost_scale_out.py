"""Scale-out: local hosts on one durable backend and one Valkey, started as the docs say, stream every turn."""

from __future__ import annotations

import contextlib
import re
import shlex
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.e2e.devhost_process import (
    PROJECT_ROOT,
    DevHostProcess,
    free_port,
    host_pair,
    run_devhost,
    scrubbed_environment,
)
from tests.e2e.sse_turns import FollowedTurn, agent_names, committed_turn, follow_turn, start_turn
from tests.eventually import eventually_blocking

DOCS_PAGE = PROJECT_ROOT / "docs" / "local-development.md"
DOCS_SECTION = "\n## Several local hosts on one backend\n"


@dataclass(frozen=True)
class HostCommand:
    """One ``python -m devhost`` command line from the docs: its environment prefix and arguments."""

    env: dict[str, str]
    args: list[str]
    port: int | None


def documented_host_commands() -> list[HostCommand]:
    """The devhost commands of the scale-out section of docs/local-development.md, its fixed ports mapped to free ones.

    Everything else (flags, setting names, values) is taken as written.
    """
    section = DOCS_PAGE.read_text().split(DOCS_SECTION, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    free = {}
    block = re.sub(r"\b\d{4,5}\b", lambda m: str(free.setdefault(m.group(), free_port())), block)
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        env = dict(word.split("=", 1) for word in words if "=" in word and not word.startswith("-"))
        words = [word for word in words if word not in {f"{k}={v}" for k, v in env.items()}]
        assert words[:3] == [".venv/bin/python", "-m", "devhost"], line
        args = words[3:]
        port = None
        if "--port" in args:  # DevHostProcess passes it (and needs to know it)
            index = args.index("--port")
            port = int(args[index + 1])
            del args[index : index + 2]
        commands.append(HostCommand(env, args, port))
    return commands


@pytest.fixture(scope="module")
def hosts(devhost_workdir: Path) -> Iterator[tuple[DevHostProcess, DevHostProcess]]:
    with host_pair(devhost_workdir, "scale", env={"SCRIPTED_CHUNK_DELAY_MS": "60"}) as pair:
        yield pair


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


def test_a_cancel_sent_to_host_a_stops_the_turn_host_b_runs(
    hosts: tuple[DevHostProcess, DevHostProcess], http: httpx.Client
) -> None:
    host_a, host_b = hosts
    agent = agent_names(http, host_a.api)[0]
    session_id, correlation_id = start_turn(http, host_a.api, agent, "a long one: Prague")
    # Read a few chunks (B's worker streams them), then ask A to stop the turn.
    turn = FollowedTurn()
    params = {"correlation_id": correlation_id}
    with connect_sse(http, "GET", f"{host_a.api}/agent/stream/{session_id}", params=params) as source:
        for sse in source.iter_sse():
            if sse.event == "message" and sse.data:
                turn.apply(sse)
            if len(turn.event_ids) == 3:
                break
    cancel = http.post(f"{host_a.api}/agents/{agent}/sessions/{session_id}/turns/{correlation_id}/cancel")
    assert cancel.status_code == 202, cancel.text
    asked = time.monotonic()
    rest = follow_turn(http, host_b.api, session_id, correlation_id, resume_from=turn.last_event_id)
    stopped_after = time.monotonic() - asked

    assert rest.terminal is not None and rest.terminal.event == "cancelled", (turn.events, rest.events)
    assert stopped_after < 1.0, f"cancelled event {stopped_after:.2f} s after the request"
    status = http.get(f"{host_b.api}/agents/{agent}/sessions/{session_id}/turns/{correlation_id}").json()
    assert status["status"] == "cancelled"
    assert turn.text + rest.text == status["response"]
    assert not status["response"].endswith("Have a great trip!"), "stopped in its middle"


def _answered_by(host: DevHostProcess, correlation_id: str) -> bool:
    return f"worker answered turn {correlation_id} " in host.log()


def test_hosts_started_as_the_docs_say_stream_turns_that_either_worker_runs(devhost_workdir: Path) -> None:
    first, second = documented_host_commands()
    assert "--backend" in second.args and "VALKEY_HOST" in second.env
    fast = {"SCRIPTED_CHUNK_DELAY_MS": "5"}
    host_1 = DevHostProcess.start(devhost_workdir, env={**first.env, **fast}, args=first.args, name="docs-1")
    try:
        host_2 = DevHostProcess.start(
            devhost_workdir, env={**second.env, **fast}, args=second.args, name="docs-2", port=second.port
        )
    except Exception:
        host_1.stop()
        raise
    hosts = (host_1, host_2)
    try:
        assert host_2.info["backend"] == host_1.info["backend"]
        assert host_2.info["valkey"] == host_1.info["valkey"]
        answered: dict[int, int] = {0: 0, 1: 0}
        with httpx.Client(timeout=30) as client:
            agent = agent_names(client, host_1.api)[0]
            # Started through one host, streamed from the other; the backend picks the worker. Go on
            # until each worker has answered some (a fair pick gets there within a few turns).
            for turn_number in range(24):
                if turn_number >= 8 and all(answered.values()):
                    break
                starter, reader = hosts[turn_number % 2], hosts[(turn_number + 1) % 2]
                session_id, correlation_id = start_turn(client, starter.api, agent, f"turn {turn_number}: Graz")
                turn = follow_turn(client, reader.api, session_id, correlation_id)
                committed = committed_turn(client, starter.api, agent, session_id, correlation_id)
                assert turn.terminal is not None and turn.terminal.event == "done", turn.events[-3:]
                assert turn.text == committed["response"]
                eventually_blocking(
                    lambda turn_id=correlation_id: any(_answered_by(host, turn_id) for host in hosts),
                    timeout=5,
                    message=f"no host logged turn {correlation_id}",
                )
                for index, host in enumerate(hosts):
                    answered[index] += _answered_by(host, correlation_id)
        assert all(answered.values()), f"turns answered per host: {answered}"
    finally:
        host_2.stop()
        host_1.stop()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--backend", "127.0.0.1:7171"], {}, "--backend shares another host's turns"),
        (["--valkey-port", "6380"], {"VALKEY_HOST": "127.0.0.1"}, "--valkey-port is for the embedded Valkey"),
    ],
    ids=["backend without a Valkey setting", "valkey port with a configured Valkey"],
)
def test_options_that_cannot_work_are_refused_at_once_in_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    started = time.monotonic()
    result = run_devhost(["--port", str(free_port()), *args], scrubbed_environment(env))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"devhost: {message}"), result.stderr
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("option", "part"), [("--valkey-port", "the embedded Valkey"), ("--backend-port", "the durable backend")]
)
def test_a_fixed_port_in_use_is_reported_plainly_without_a_traceback(option: str, part: str) -> None:
    with contextlib.closing(socket.socket()) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = run_devhost(["--port", str(free_port()), option, port], scrubbed_environment())
    assert result.returncode == 1
    # The app's start-up log (and gRPC's own line for the backend) may come first; the reason comes last.
    assert "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"devhost: cannot start {part}") and port in last_line and option in last_line
