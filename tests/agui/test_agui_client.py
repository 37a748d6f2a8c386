"""The official AG-UI client (``@ag-ui/client`` 1.0, ``HttpAgent``) against devhost.

Its event verifier checks every stream it reads: a run it rejects ends in ``thrown``. Node and the
package come from ``tests/agui/package.json`` (``.ci/run`` runs ``npm ci`` there); without them the
tests skip in one line, and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import uuid

import httpx

from tests.agui.agui_node import run_client
from tests.e2e.devhost_process import DevHostProcess
from travel_agents import FAIL_MARKER


def _runs(devhost: DevHostProcess, agent: str, runs: list[dict], thread: str | None = None) -> dict:
    return run_client(f"{devhost.api}/agents/{agent}/ag-ui", runs, thread)


def _history(devhost: DevHostProcess, agent: str, thread: str) -> dict:
    response = httpx.get(f"{devhost.api}/agents/{agent}/sessions/{thread}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_client_sees_the_tool_call_and_text_equal_to_the_committed_answer(
    client_ready: None, devhost: DevHostProcess, agent_name: str
) -> None:
    shown = _runs(devhost, agent_name, [{"message": "Three days in Lisbon in May?"}])
    (run,) = shown["results"]

    assert "thrown" not in run, run["thrown"]
    assert run["outcome"] == "success"
    assert [call["name"] for call in run["toolCalls"]] == ["get_destination_weather"]
    assert json.loads(run["toolCalls"][0]["args"]) == {"city": "Lisbon", "month": "May"}
    assert run["toolResults"][0]["content"] == "Lisbon in May: sunny, 20 °C."
    (turn,) = _history(devhost, agent_name, shown["threadId"])["turns"]
    assert run["text"] == turn["response"] and turn["correlation_id"] == run["runId"]


def test_a_second_run_continues_the_thread(client_ready: None, devhost: DevHostProcess, agent_name: str) -> None:
    shown = _runs(devhost, agent_name, [{"message": "Oslo in January?"}, {"message": "And what should I pack?"}])

    assert all("thrown" not in run and run["outcome"] == "success" for run in shown["results"]), shown
    turns = _history(devhost, agent_name, shown["threadId"])["turns"]
    assert [turn["correlation_id"] for turn in turns] == [run["runId"] for run in shown["results"]]


def test_a_failing_turn_ends_in_run_error(client_ready: None, devhost: DevHostProcess, agent_name: str) -> None:
    (run,) = _runs(devhost, agent_name, [{"message": f"Break {FAIL_MARKER}"}])["results"]

    assert run["types"][-1] == "RUN_ERROR" and "ScriptedModelError" in (run["error"] or "")


def test_a_cancelled_turn_finishes_with_the_cancelled_outcome(
    client_ready: None, devhost: DevHostProcess, agent_name: str
) -> None:
    thread, run_id = uuid.uuid4().hex, uuid.uuid4().hex
    cancel_url = f"{devhost.api}/agents/{agent_name}/sessions/{thread}/turns/{run_id}/cancel"
    (run,) = _runs(
        devhost,
        agent_name,
        [{"message": "Plan Rome", "runId": run_id, "cancelUrl": cancel_url, "cancelAfterContent": 3}],
        thread,
    )["results"]

    assert "thrown" not in run, run["thrown"]
    assert run["outcome"] == "cancelled", run["types"]
