"""The ``trip_planner`` workflow watched live: start to first token, an answer to the next token, a plain turn.

Run: .venv/bin/python -m bench.bench_workflows [--workflows 20] [--concurrency 1] [--chunk-delay-ms 40]

One local host (``python -m devhost``, the app of ``function_app.py``, scripted model at the given
pace, embedded ``valkey-server``), driven over HTTP as a client would. Each workflow is started with
``POST /api/workflow/trip_planner/run`` and followed through the run's ``stream_url`` (the token
route, the whole instance's stream) until it ends. On the first approval request (``input_requested``)
the client asks for changes with feedback, on the second it approves. Timed, from the client's side:

- start to first token: ``POST .../run`` sent to the first ``message`` of any step (the two first
  agents start at once);
- request to the next token: the answer with feedback sent (``POST .../respond/...``) to the first
  ``message`` of the writer's revision. ``trip_planner`` runs no agent after an approval, so this
  is the issue's "approval to the next token": the moment a person's answer reaches an agent;
- approval to the end: the approval sent to ``workflow_completed``;
- draft to approval request: the writer's ``step_completed`` to the ``input_requested`` that follows
  (the request reaches the stream when a reader's quiet check reads the orchestration's status);
- a plain turn's first token: ``POST /api/agents/{name}/stream`` sent to its first ``message``, one
  turn beside each workflow (which goes first alternates), read to its end.

``--concurrency`` workflows (each with its plain turn) run at once. One workflow and one turn warm
the host up first and are not counted. p50/p99 are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench._stats import pct
from tests.e2e.devhost_process import DevHostProcess
from travel_agents import DEFAULT_SCRIPTED_CHUNK_DELAY_MS

WORKFLOW = "trip_planner"
PROMPT = "A long weekend in Lisbon in May for two"
FEEDBACK = "Add a museum each day"
WORKFLOW_ENDS = ("workflow_completed", "workflow_failed", "workflow_cancelled")


@dataclass
class WorkflowTimes:
    """One workflow's figures, in seconds."""

    first_token: float
    draft_to_request: float
    changes_to_token: float
    approval_to_end: float


class _Follower:
    """Follows one instance's stream and answers its two approval requests (changes, then approval)."""

    def __init__(self, client: httpx.AsyncClient, run: dict[str, Any], started: float) -> None:
        self.client = client
        self.respond_uri: str = run["respondUri"]
        self.started = started
        self.first_token: float | None = None
        self.last_step_end: float | None = None
        self.draft_to_request: list[float] = []
        self.changes_sent: float | None = None
        self.changes_to_token: float | None = None
        self.approval_sent: float | None = None
        self.answers: list[asyncio.Task[httpx.Response]] = []

    def on_event(self, name: str, data: str, now: float) -> None:
        if name == "message" and json.loads(data).get("text"):
            if self.first_token is None:
                self.first_token = now - self.started
            if self.changes_sent is not None and self.changes_to_token is None:
                self.changes_to_token = now - self.changes_sent
        elif name == "step_completed":
            self.last_step_end = now
        elif name == "input_requested":
            if self.last_step_end is not None:
                self.draft_to_request.append(now - self.last_step_end)
            approve = self.changes_sent is not None
            review = {"approved": True, "feedback": ""} if approve else {"approved": False, "feedback": FEEDBACK}
            sent = time.perf_counter()
            if approve:
                self.approval_sent = sent
            else:
                self.changes_sent = sent
            # Answered on the side, so that events arriving while the answer is on its way are timed as they come.
            url = self.respond_uri.replace("{requestId}", json.loads(data)["request_id"])
            self.answers.append(asyncio.create_task(self.client.post(url, json=review)))

    async def times(self, ended_at: float) -> WorkflowTimes:
        for answer in self.answers:
            response = await answer
            if response.status_code != 200:
                raise RuntimeError(f"respond answered {response.status_code}: {response.text[:200]}")
        if self.first_token is None or self.changes_to_token is None or self.approval_sent is None:
            raise RuntimeError("the workflow ended before both approval requests and the writer's revision")
        return WorkflowTimes(
            first_token=self.first_token,
            draft_to_request=self.draft_to_request[0],
            changes_to_token=self.changes_to_token,
            approval_to_end=ended_at - self.approval_sent,
        )


async def one_workflow(client: httpx.AsyncClient, host: DevHostProcess) -> WorkflowTimes:
    """Start, follow and answer one ``trip_planner`` instance; its figures."""
    started = time.perf_counter()
    response = await client.post(f"{host.api}/workflow/{WORKFLOW}/run", json={"message": PROMPT})
    if response.status_code != 202:
        raise RuntimeError(f"run answered {response.status_code}: {response.text[:200]}")
    run = response.json()
    follower = _Follower(client, run, started)
    async with aconnect_sse(client, "GET", host.url + run["stream_url"]) as source:
        async for event in source.aiter_sse():
            now = time.perf_counter()
            if event.event in WORKFLOW_ENDS:
                output = json.loads(event.data).get("output")
                if event.event != "workflow_completed" or not output or not output[0].get("approved"):
                    raise RuntimeError(f"workflow {run['instanceId']} ended {event.event}: {event.data[:300]}")
                return await follower.times(now)
            if event.event == "error":
                raise RuntimeError(f"workflow stream error: {event.data[:300]}")
            follower.on_event(event.event, event.data, now)
    raise RuntimeError(f"the stream of workflow {run['instanceId']} ended before the workflow")


async def plain_turn_first_token(client: httpx.AsyncClient, host: DevHostProcess, agent: str) -> float:
    """A chat turn's request to its first text, in seconds; the turn is read to its end."""
    started = time.perf_counter()
    first: float | None = None
    async with aconnect_sse(client, "POST", f"{host.api}/agents/{agent}/stream", json={"message": PROMPT}) as source:
        async for event in source.aiter_sse():
            if event.event == "message" and event.data and first is None:
                first = time.perf_counter() - started
            elif event.event in ("done", "error", "cancelled"):
                if event.event != "done" or first is None:
                    raise RuntimeError(f"plain turn ended {event.event} ({event.data[:200]}), first token {first}")
                return first
    raise RuntimeError("the plain turn's stream ended without done")


async def workflow_and_turn(
    client: httpx.AsyncClient, host: DevHostProcess, agent: str, index: int
) -> tuple[WorkflowTimes, float]:
    """One workflow and one plain turn, one after the other; which goes first alternates with ``index``."""
    if index % 2:
        turn = await plain_turn_first_token(client, host, agent)
        return await one_workflow(client, host), turn
    workflow = await one_workflow(client, host)
    return workflow, await plain_turn_first_token(client, host, agent)


async def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-workflows-") as folder:
        host = DevHostProcess.start(
            Path(folder), env={"SCRIPTED_CHUNK_DELAY_MS": str(args.chunk_delay_ms)}, name="bench-workflows"
        )
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=30)) as client:
                agent = (await client.get(f"{host.api}/health")).json()["agents"][0]["name"]
                print(
                    f"devhost at {host.url}: workflow {WORKFLOW}, plain turns on {agent}, scripted model "
                    f"{args.chunk_delay_ms} ms between chunks, {args.workflows} workflows, "
                    f"{args.concurrency} at once",
                    flush=True,
                )
                await workflow_and_turn(client, host, agent, 0)  # warm up: imports, channels, the first replay
                gate = asyncio.Semaphore(args.concurrency)

                async def gated(index: int) -> tuple[WorkflowTimes, float]:
                    async with gate:
                        return await workflow_and_turn(client, host, agent, index)

                started = time.perf_counter()
                results = await asyncio.gather(*(gated(i) for i in range(args.workflows)))
                elapsed = time.perf_counter() - started
        finally:
            host.stop()
    workflows = [w for w, _ in results]
    turns = [t for _, t in results]
    n = len(results)

    def line(label: str, values: list[float]) -> None:
        ms = [v * 1000 for v in values]
        print(f"{label:<34} p50 {pct(ms, 0.5):7.1f} ms  p99 {pct(ms, 0.99):7.1f} ms  (n={len(ms)})")

    line("workflow start->first token", [w.first_token for w in workflows])
    line("plain turn first token", turns)
    line("request changes->next token", [w.changes_to_token for w in workflows])
    line("approval->workflow_completed", [w.approval_to_end for w in workflows])
    line("draft done->approval request", [w.draft_to_request for w in workflows])
    print(f"{n} workflows and {n} plain turns in {elapsed:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=20, help="workflows measured (each with one plain turn)")
    parser.add_argument("--concurrency", type=int, default=1, help="workflows (with their plain turns) at once")
    parser.add_argument(
        "--chunk-delay-ms",
        type=int,
        default=DEFAULT_SCRIPTED_CHUNK_DELAY_MS,
        help="the scripted model's pause between chunks (the app's default)",
    )
    args = parser.parse_args()
    if args.workflows < 1 or args.concurrency < 1 or args.chunk_delay_ms < 0:
        parser.error("--workflows and --concurrency must be at least 1, --chunk-delay-ms not negative")
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
