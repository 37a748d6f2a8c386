"""Orchestrations end to end through ``python -m devhost --app``, on the small app in tests/orchestrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.devhost_process import DevHostProcess, free_port, run_devhost, scrubbed_environment
from tests.eventually import eventually_blocking

APP = "tests.orchestrations.orchestration_app:app"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostProcess]:
    workdir = tmp_path_factory.mktemp("orchestrations")
    process = DevHostProcess.start(workdir, args=["--app", APP], env={"SCRIPTED_CHUNK_DELAY_MS": "1"}, name="orch")
    yield process
    process.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client


def start(http: httpx.Client, host: DevHostProcess, name: str, input_: Any = None) -> dict[str, str]:
    response = http.post(f"{host.api}/orchestrators/{name}", json=input_)
    assert response.status_code == 202, response.text
    links = response.json()
    assert response.headers["Location"] == links["statusQueryGetUri"]
    assert links["statusQueryGetUri"].startswith(host.url + "/runtime/webhooks/durabletask/instances/")
    return links


def status(http: httpx.Client, links: dict[str, str]) -> dict[str, Any]:
    return http.get(links["statusQueryGetUri"]).json()


def ended(http: httpx.Client, links: dict[str, str], timeout: float = 30.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = status(http, links)
        return body if body["runtimeStatus"] in ("Completed", "Failed", "Terminated") else None

    return eventually_blocking(
        check, timeout=timeout, message=lambda: f"the instance did not end: {status(http, links)}"
    )


def running(http: httpx.Client, links: dict[str, str]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = status(http, links)
        return body if body["runtimeStatus"] == "Running" else None

    return eventually_blocking(check, timeout=20, message=lambda: f"the instance is not running: {status(http, links)}")


def run(http: httpx.Client, host: DevHostProcess, name: str, input_: Any = None) -> httpx.Response:
    return http.post(f"{host.api}/orchestrators/{name}/wait", json=input_)


def test_app_option_hosts_that_app_and_the_banner_lists_its_orchestrators_and_activities(host: DevHostProcess) -> None:
    log = host.log()
    assert f"devhost: {APP} running locally" in log
    assert "orchestrators fan_out, approval" in log
    assert "activities greet, double, fail, flaky" in log


def test_fan_out_of_activities_and_an_agent_call_completes_with_every_result(
    http: httpx.Client, host: DevHostProcess
) -> None:
    links = start(http, host, "fan_out", ["Ada", "Grace"])
    body = ended(http, links, timeout=60)
    assert body["runtimeStatus"] == "Completed", body
    assert body["output"]["greetings"] == ["Hello Ada!", "Hello Grace!"]
    assert body["output"]["agent"].strip()
    assert body["customStatus"] == {"stage": "done", "tasks": 3}
    assert body["input"] == ["Ada", "Grace"]


def test_a_timer_then_an_event_raised_over_http_with_custom_status_read_back(
    http: httpx.Client, host: DevHostProcess
) -> None:
    links = start(http, host, "approval")
    first = status(http, links)
    assert first["runtimeStatus"] in ("Pending", "Running")

    def waits_for_approval() -> dict[str, Any] | None:
        body = status(http, links)
        return body if (body["customStatus"] or {}).get("waiting") == "approval" else None

    waiting = eventually_blocking(waits_for_approval, timeout=20, message=lambda: str(status(http, links)))
    assert waiting["runtimeStatus"] == "Running"
    raised = http.post(links["sendEventPostUri"].replace("{eventName}", "approval"), json={"approved": True})
    assert raised.status_code == 202
    body = ended(http, links)
    assert body["runtimeStatus"] == "Completed"
    # new_uuid and current_utc_datetime: the values of the first episode, read back after every replay.
    assert body["output"] == {
        "decision": {"approved": True},
        "uuid": waiting["customStatus"]["uuid"],
        "started": waiting["customStatus"]["started"],
    }


def test_task_any_resumes_on_the_event_before_the_long_timer(http: httpx.Client, host: DevHostProcess) -> None:
    links = start(http, host, "race")
    running(http, links)
    assert http.post(links["sendEventPostUri"].replace("{eventName}", "go"), json=1).status_code == 202
    assert ended(http, links)["output"] == "event"


def test_a_failing_activity_caught_by_the_orchestrator(http: httpx.Client, host: DevHostProcess) -> None:
    response = run(http, host, "catches_failure")
    assert response.status_code == 200, response.text
    # A string output is the body as it is, not JSON (the Functions client's _create_http_response).
    assert response.text.startswith("caught: ") and "expected failure" in response.text


def test_a_failing_activity_not_caught_fails_the_instance_with_its_error(
    http: httpx.Client, host: DevHostProcess
) -> None:
    response = run(http, host, "fails")
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["runtimeStatus"] == "Failed"
    assert "uncaught failure" in body["output"]
    assert "Orchestrator function 'fails' failed" in body["output"]


def test_an_activity_with_retry_options_succeeds_on_its_third_attempt(http: httpx.Client, host: DevHostProcess) -> None:
    response = run(http, host, "retries", "retry-key-1")
    assert response.status_code == 200, response.text
    assert response.json() == 3


def test_continue_as_new_runs_until_the_orchestrator_returns(http: httpx.Client, host: DevHostProcess) -> None:
    response = run(http, host, "counter", 0)
    assert response.status_code == 200, response.text
    assert response.json() == 3


def test_a_sub_orchestration_result_reaches_its_parent(http: httpx.Client, host: DevHostProcess) -> None:
    response = run(http, host, "parent", 5)
    assert response.status_code == 200, response.text
    assert response.json() == {"child": 10}


def test_an_unsupported_feature_fails_the_instance_with_a_clear_message(
    http: httpx.Client, host: DevHostProcess
) -> None:
    response = run(http, host, "uses_http")
    assert response.status_code == 500, response.text
    assert "call_http" in response.json()["output"]


def test_an_orchestrator_awaiting_a_never_raised_event_stays_running_until_terminated_then_is_purged(
    http: httpx.Client, host: DevHostProcess
) -> None:
    links = start(http, host, "waits_forever")
    running(http, links)
    body = status(http, links)
    assert body["customStatus"] == "waiting for an event nobody raises"
    # The host keeps answering while the instance waits: nothing is held by it.
    assert http.get(f"{host.api}/health").status_code == 200
    terminated = http.post(links["terminatePostUri"].replace("{text}", "no longer needed"))
    assert terminated.status_code == 202
    body = ended(http, links)
    assert body["runtimeStatus"] == "Terminated"
    assert body["output"] == "no longer needed"
    assert http.post(links["terminatePostUri"].replace("{text}", "again")).status_code == 410
    assert http.delete(links["purgeHistoryDeleteUri"]).json() == {"instancesDeleted": 1}
    assert http.get(links["statusQueryGetUri"]).status_code == 404


def test_the_client_binding_get_status_reads_the_instance(http: httpx.Client, host: DevHostProcess) -> None:
    links = start(http, host, "parent", 2)
    ended(http, links)
    body = http.get(f"{host.api}/instances/{links['id']}").json()
    assert body["runtimeStatus"] == "Completed"
    assert body["output"] == {"child": 4}
    assert body["input"] == 2
    assert body["createdTime"] and body["lastUpdatedTime"]
    assert http.get(f"{host.api}/instances/no-such-instance").status_code == 404


def test_stopping_the_host_while_an_orchestration_waits_leaves_nothing_running(tmp_path: Path) -> None:
    host = DevHostProcess.start(tmp_path, args=["--app", APP], name="orch-stop")
    with httpx.Client(timeout=10) as http:
        links = start(http, host, "waits_forever")
        running(http, links)
    assert host.stop(timeout=20) == 0, host.log()
    assert "devhost: stopped" in host.log()
    # Nothing of the host's process group (its embedded valkey-server included) outlives it.
    with pytest.raises(ProcessLookupError):
        os.killpg(host.process.pid, 0)


def test_an_orchestration_started_on_a_host_without_worker_runs_on_the_other_hosts_worker(tmp_path: Path) -> None:
    backend_host = DevHostProcess.start(tmp_path, args=["--app", APP, "--no-worker"], name="orch-a")
    try:
        valkey_host, _, valkey_port = backend_host.info["valkey"].rpartition(":")
        worker_host = DevHostProcess.start(
            tmp_path,
            args=["--app", APP, "--backend", backend_host.info["backend"]],
            env={"VALKEY_HOST": valkey_host, "VALKEY_PORT": valkey_port, "SCRIPTED_CHUNK_DELAY_MS": "1"},
            name="orch-b",
        )
        try:
            with httpx.Client(timeout=30) as http:
                links = start(http, backend_host, "fan_out", ["Ada"])
                body = ended(http, links, timeout=60)
                assert body["runtimeStatus"] == "Completed", body
                assert body["output"]["greetings"] == ["Hello Ada!"]
                assert body["output"]["agent"].strip()
                # The other host reads the same instance from the shared backend.
                other = http.get(links["statusQueryGetUri"].replace(backend_host.url, worker_host.url)).json()
                assert other["output"] == body["output"]
        finally:
            worker_host.stop()
    finally:
        backend_host.stop()


def test_a_fire_and_forget_agent_run_fails_as_the_sdk_fails_it(http: httpx.Client, host: DevHostProcess) -> None:
    # Agent Framework answers wait_for_response=False with a task whose action the SDK cannot
    # serialize (NoOpAction): the SDK raises in its own handler, on Azure as here.
    response = run(http, host, "signals_agent", "fire and forget")
    assert response.status_code == 500, response.text
    assert "anonymous Action" in response.json()["output"]


@pytest.mark.parametrize(
    ("app", "code", "reason"),
    [
        ("no_such_module:app", 1, "cannot import no_such_module"),
        ("tests.orchestrations.orchestration_app:nothing", 1, "is not an azure.functions FunctionApp"),
        ("a:b:c", 2, "--app takes MODULE:ATTRIBUTE"),
    ],
    ids=["missing module", "missing attribute", "malformed"],
)
def test_an_app_that_cannot_be_loaded_stops_the_host_with_the_reason(app: str, code: int, reason: str) -> None:
    result = run_devhost(["--app", app, "--port", str(free_port())], scrubbed_environment())
    assert result.returncode == code, result.stderr
    assert reason in result.stderr
