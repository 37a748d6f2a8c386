"""Durable Functions orchestrations on the local host: replay cost as histories grow, and an agent call's overhead.

Run: .venv/bin/python -m bench.bench_orchestrations [--rounds 3]

One ``python -m devhost --app tests.orchestrations.orchestration_app:app`` (scripted model, no chunk
delay). Figures printed, nothing asserted:

- start to completion of an orchestration of 10, 50 and 200 sequential activity calls (every result
  is one more work item, and each replays the history so far), with the time per activity;
- an agent call from an orchestration (``app.get_agent(context, name).run``: an entity call through
  the out-of-process bridge) against a direct turn (``POST /api/agents/{name}/run?wait_for_response=true``),
  measured in alternating rounds, with the median of the rounds' ratios.

Completion is seen by polling the instance's status every 10 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.e2e.devhost_process import DevHostProcess

APP = "tests.orchestrations.orchestration_app:app"
AGENT = "TravelAgent"
PROMPT = "Suggest a weekend in Lisbon"


def _orchestration_seconds(http: httpx.Client, host: DevHostProcess, name: str, input_: object) -> float:
    started = time.perf_counter()
    links = http.post(f"{host.api}/orchestrators/{name}", json=input_).json()
    while True:
        body = http.get(links["statusQueryGetUri"]).json()
        if body["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            elapsed = time.perf_counter() - started
            if body["runtimeStatus"] != "Completed":
                raise RuntimeError(f"{name} ended {body['runtimeStatus']}: {body['output']}")
            return elapsed
        time.sleep(0.01)


def _direct_turn_seconds(http: httpx.Client, host: DevHostProcess) -> float:
    started = time.perf_counter()
    response = http.post(
        f"{host.api}/agents/{AGENT}/run", params={"wait_for_response": "true"}, json={"message": PROMPT}
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"direct turn answered {response.status_code}: {response.text[:200]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements per figure (median printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        host = DevHostProcess.start(
            Path(workdir), args=["--app", APP], env={"SCRIPTED_CHUNK_DELAY_MS": "0"}, name="bench"
        )
        try:
            with httpx.Client(timeout=httpx.Timeout(300.0)) as http:
                _orchestration_seconds(http, host, "sequence", 2)  # warm up: imports, channels, the first replay
                for count in (10, 50, 200):
                    times = [_orchestration_seconds(http, host, "sequence", count) for _ in range(args.rounds)]
                    median = statistics.median(times)
                    print(
                        f"sequential activities {count:>3}: start to completion median {median * 1000:.0f} ms "
                        f"({median / count * 1000:.1f} ms per activity, {args.rounds} runs)",
                        flush=True,
                    )
                _direct_turn_seconds(http, host)
                ratios, orchestrated, direct = [], [], []
                for round_ in range(max(args.rounds, 5)):
                    first, second = ("orch", "direct") if round_ % 2 == 0 else ("direct", "orch")
                    measured = {}
                    for which in (first, second):
                        measured[which] = (
                            _orchestration_seconds(http, host, "one_agent_call", PROMPT)
                            if which == "orch"
                            else _direct_turn_seconds(http, host)
                        )
                    orchestrated.append(measured["orch"])
                    direct.append(measured["direct"])
                    ratios.append(measured["orch"] / measured["direct"])
                print(
                    f"agent call: from an orchestration median {statistics.median(orchestrated) * 1000:.0f} ms, "
                    f"direct turn median {statistics.median(direct) * 1000:.0f} ms, "
                    f"ratio orchestration/direct {statistics.median(ratios):.2f} ({len(ratios)} alternating rounds)",
                    flush=True,
                )
        finally:
            host.stop()


if __name__ == "__main__":
    main()
