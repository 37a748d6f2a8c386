"""F5 in VS Code: the local-host launch configuration runs under debugpy, its breakpoints hit, Stop stops every part.

The configuration is read from ``.vscode/launch.json`` (module, args, python arguments, env, debugger
settings) and run the ways VS Code runs it: ``python -m debugpy --listen`` plus an attaching client,
and debugpy's adapter driven over the Debug Adapter Protocol as VS Code drives it on F5. Only the HTTP
port is changed (a free one) and the interpreter is this test's.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey as valkey_py

from tests.e2e.dap_client import DapClient, Message
from tests.e2e.devhost_process import PROJECT_ROOT, free_port, scrubbed_environment
from tests.e2e.sse_turns import agent_names
from tests.eventually import eventually_blocking
from tests.vscode_config import LOCAL_HOST_CONFIGURATION, VENV_PYTHON, launch_configurations, substitute, with_port

CALLBACK_FILE = PROJECT_ROOT / "valkey_buffer" / "_buffer.py"
HANDLER_FILE = PROJECT_ROOT / "http_api" / "_handlers.py"
AGENT_LOOP_THREAD = "dafx-agent-loop"  # the thread agent_framework_durabletask runs entity code on


def _local_host_configuration() -> dict[str, Any]:
    configuration = substitute(launch_configurations()[LOCAL_HOST_CONFIGURATION])
    # The workspace's .venv is this test's interpreter here (it may live elsewhere, as in CI's .venv).
    assert configuration["python"] == str(PROJECT_ROOT / VENV_PYTHON)
    configuration["python"] = sys.executable
    return configuration


def _wait_until_serving(
    api: str,
    running: Callable[[], bool] = lambda: True,
    log: Callable[[], str] = lambda: "",
    timeout: float = 90.0,
) -> None:

    def serving() -> bool:
        assert running(), f"the host exited:\n{log()}"
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        return False

    eventually_blocking(serving, timeout=timeout, interval=0.1, message=lambda: f"the host did not serve:\n{log()}")


def _wait_until_group_is_gone(process_group: int, message: str) -> None:
    """Every process of the group ends (debugpy's adapter may take a moment after the host)."""

    def gone() -> bool:
        try:
            os.killpg(process_group, 0)
        except ProcessLookupError:
            return True
        return False

    eventually_blocking(gone, timeout=10, message=message)


def _wait_until_process_is_gone(pid: int, message: str) -> None:
    """The process ends (a zombie, waiting to be reaped by whoever adopted it, has)."""

    def gone() -> bool:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1]
        except (ProcessLookupError, FileNotFoundError):
            return True
        return state.startswith("Z")

    eventually_blocking(gone, timeout=5, message=message)


def _first_statement_line(path: Path, function: str) -> int:
    """The line of the first statement in ``function``'s body (past its docstring, into a leading try)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            while isinstance(body[0], ast.Try):
                body = body[0].body
            return body[0].lineno
    raise AssertionError(f"{function} is not defined in {path}")


class DebuggedHost:
    """``python [pythonArgs] -m debugpy --listen ... -m devhost [args]`` in its own process group."""

    def __init__(self, workdir: Path, configuration: dict[str, Any], *, wait_for_client: bool) -> None:
        self.port = free_port()
        self.debug_port = free_port()
        self.log_path = workdir / f"debugpy-devhost-{self.port}.log"
        listen = ["-m", "debugpy", "--listen", f"127.0.0.1:{self.debug_port}"]
        if wait_for_client:
            listen.append("--wait-for-client")
        self.command = [
            configuration["python"],
            *configuration.get("pythonArgs", []),
            *listen,
            "-m",
            configuration["module"],
            *with_port(configuration.get("args", []), self.port),
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=configuration.get("cwd", PROJECT_ROOT),
                env=scrubbed_environment(configuration.get("env", {})),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the group holds the host, debugpy's adapter and valkey-server
            )

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_serving(self) -> None:
        _wait_until_serving(self.api, lambda: self.process.poll() is None, self.log)

    def embedded_valkey(self) -> str:
        match = re.search(r"Valkey\s+(\S+) \(embedded", self.log())
        assert match, self.log()
        return match.group(1)

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C, as in the integrated terminal; the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


@pytest.fixture
def debugged_hosts(tmp_path: Path) -> Iterator[list[DebuggedHost]]:
    """Hosts a test starts; whatever is left of them is killed at the end."""
    hosts: list[DebuggedHost] = []
    yield hosts
    for host in hosts:
        host.kill()


def _start_turn_in_background(api: str, agent: str, results: list[httpx.Response]) -> threading.Thread:
    # The request waits at the handler's breakpoint until the test lets it go: not on the test's thread.
    def post() -> None:
        results.append(httpx.post(f"{api}/agents/{agent}/run", json={"message": "Two days in Porto?"}, timeout=120))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def _stopped_at(dap: DapClient, timeout: float = 60.0) -> tuple[Message, str, Message]:
    """The next breakpoint stop: the event, the stopped thread's name, its top frame."""
    stopped = dap.wait_event("stopped", timeout, where=lambda e: e["body"].get("reason") == "breakpoint")
    thread_id = stopped["body"]["threadId"]
    return stopped, dap.thread_names()[thread_id], dap.top_frame(thread_id)


def _committed_status(api: str, agent: str, session_id: str, correlation_id: str, timeout: float = 60.0) -> str:
    """The turn's status once it is no longer pending."""

    def status() -> str | None:
        response = httpx.get(f"{api}/agents/{agent}/sessions/{session_id}/turns/{correlation_id}", timeout=10)
        found = response.json().get("status", "pending")
        return None if found == "pending" else found

    return eventually_blocking(status, timeout=timeout, interval=0.2, message=f"turn {correlation_id} is still pending")


def test_local_host_configuration_under_debugpy_serves_and_stops_cleanly(
    tmp_path: Path, debugged_hosts: list[DebuggedHost]
) -> None:
    host = DebuggedHost(tmp_path, _local_host_configuration(), wait_for_client=False)
    debugged_hosts.append(host)
    host.wait_until_serving()
    health = httpx.get(f"{host.api}/health", timeout=10).json()
    assert health["agents"], health
    valkey_pid = _valkey_pid(host.embedded_valkey())

    assert host.interrupt() == 0, host.log()
    log = host.log()
    assert "Traceback" not in log, log
    assert log.rstrip().endswith("devhost: stopped"), log
    # By its process, not its port: another test's server may take the freed port at once.
    _wait_until_process_is_gone(valkey_pid, "the embedded valkey-server outlived the host")
    _wait_until_group_is_gone(
        host.process.pid, "a process of the debugged host (debugpy's adapter, valkey-server) is left"
    )


def test_breakpoints_hit_in_an_http_handler_and_in_the_callback_on_the_agent_loop_thread(
    tmp_path: Path, debugged_hosts: list[DebuggedHost]
) -> None:
    configuration = _local_host_configuration()
    host = DebuggedHost(tmp_path, configuration, wait_for_client=True)
    debugged_hosts.append(host)
    handler_line = _first_statement_line(HANDLER_FILE, "run_turn")
    callback_line = _first_statement_line(CALLBACK_FILE, "on_streaming_response_update")
    debugger_settings = {k: configuration[k] for k in ("justMyCode", "subProcess") if k in configuration}

    with DapClient(("127.0.0.1", host.debug_port)) as dap:
        placed = dap.attach({str(HANDLER_FILE): [handler_line], str(CALLBACK_FILE): [callback_line]}, debugger_settings)
        assert all(bp["verified"] for bps in placed.values() for bp in bps), placed
        host.wait_until_serving()
        with httpx.Client(timeout=10) as client:
            agent = agent_names(client, host.api)[0]

        responses: list[httpx.Response] = []
        request = _start_turn_in_background(host.api, agent, responses)
        stopped, thread, frame = _stopped_at(dap)
        assert (frame["source"]["path"], frame["line"]) == (str(HANDLER_FILE), handler_line)
        assert thread == "MainThread", "HTTP handlers run on the host's event loop, in the main thread"
        dap.request("continue", {"threadId": stopped["body"]["threadId"]})
        request.join(30)
        assert responses and responses[0].status_code == 202, responses
        session_id, correlation_id = responses[0].json()["session_id"], responses[0].json()["correlation_id"]

        stopped, thread, frame = _stopped_at(dap)
        assert (frame["source"]["path"], frame["line"]) == (str(CALLBACK_FILE), callback_line)
        assert thread == AGENT_LOOP_THREAD, f"the callback stopped on {thread!r}"

        # Let the turn go on without stopping at every chunk: it still completes and commits.
        dap.request("setBreakpoints", {"source": {"path": str(CALLBACK_FILE)}, "breakpoints": []})
        dap.request("continue", {"threadId": stopped["body"]["threadId"]})
        assert _committed_status(host.api, agent, session_id, correlation_id) == "completed"

        assert host.interrupt() == 0, host.log()
    assert "Traceback" not in host.log(), host.log()


class DebugAdapter:
    """debugpy's adapter as VS Code runs it for a launch configuration, serving DAP on a free port."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = workdir / f"debugpy-adapter-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "debugpy.adapter", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def _launch(dap: DapClient, configuration: dict[str, Any], breakpoints: dict[str, Sequence[int]]) -> None:
    """initialize, launch, breakpoints, configurationDone: what VS Code sends on F5."""
    dap.request(
        "initialize",
        {"clientID": "vscode", "adapterID": "debugpy", "pathFormat": "path", "linesStartAt1": True,
         "columnsStartAt1": True, "supportsRunInTerminalRequest": False},
    )  # fmt: skip
    launched = dap.send("launch", configuration)
    dap.wait_event("initialized")
    for path, lines in breakpoints.items():
        dap.request("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": n} for n in lines]})
    dap.request("setExceptionBreakpoints", {"filters": []})
    dap.request("configurationDone")
    dap.response(launched)


def test_f5_launch_hits_the_callback_breakpoint_and_the_stop_button_stops_every_part(tmp_path: Path) -> None:
    configuration = _local_host_configuration()
    port = free_port()
    configuration["args"] = with_port(configuration.get("args", []), port)
    # The terminal VS Code would open is this test's output instead (the program's output is the same).
    configuration["console"] = "internalConsole"
    api = f"http://127.0.0.1:{port}/api"
    callback_line = _first_statement_line(CALLBACK_FILE, "on_streaming_response_update")

    adapter = DebugAdapter(tmp_path, scrubbed_environment())
    host_group: int | None = None  # debugpy's launcher starts the host in a process group of its own
    exited: Message | None = None
    try:
        with DapClient(("127.0.0.1", adapter.port)) as dap:
            _launch(dap, configuration, {str(CALLBACK_FILE): [callback_line]})
            host_group = dap.wait_event("process")["body"]["systemProcessId"]
            _wait_until_serving(api)
            with httpx.Client(timeout=10) as client:
                agent = agent_names(client, api)[0]
                response = client.post(f"{api}/agents/{agent}/run", json={"message": "A weekend in Bruges?"})
            assert response.status_code == 202, response.text
            valkey = re.search(r"Valkey\s+(\S+) \(embedded", dap.output())
            assert valkey, dap.output()
            valkey_pid = _valkey_pid(valkey.group(1))

            stopped, thread, frame = _stopped_at(dap)
            assert (frame["source"]["path"], frame["line"]) == (str(CALLBACK_FILE), callback_line)
            assert thread == AGENT_LOOP_THREAD, f"the callback stopped on {thread!r}"
            dap.request("setBreakpoints", {"source": {"path": str(CALLBACK_FILE)}, "breakpoints": []})
            dap.request("continue", {"threadId": stopped["body"]["threadId"]})
            session_id, correlation_id = response.json()["session_id"], response.json()["correlation_id"]
            assert _committed_status(api, agent, session_id, correlation_id) == "completed"

            # The Stop button: VS Code sends "terminate" (debugpy supports it); with onTerminate set
            # to KeyboardInterrupt the host gets Ctrl-C instead of being killed.
            dap.request("terminate")
            exited = dap.wait_event("exited", 30)
            output = dap.output()
    finally:
        adapter.stop()
        if host_group is not None and exited is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host_group, signal.SIGKILL)
    assert exited["body"]["exitCode"] == 0, output
    assert "Traceback" not in output, output
    assert output.rstrip().endswith("devhost: stopped"), output
    _wait_until_process_is_gone(valkey_pid, "the embedded valkey-server outlived the host")
    assert host_group is not None
    _wait_until_group_is_gone(host_group, "a process of the host (valkey-server) is left")


def _valkey_pid(address: str) -> int:
    """The process id of the valkey-server listening at ``host:port``."""
    host, _, port = address.rpartition(":")
    client = valkey_py.Valkey(host=host, port=int(port), socket_timeout=5)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()
