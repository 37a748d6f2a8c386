"""Stream tokens through a running local host: a browser-style client follows a turn by its stream_url,
and neither tokens nor function keys reach the host's log, even with request logging on."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.e2e.devhost_process import DevHostProcess
from tests.e2e.sse_turns import agent_names, committed_turn


def test_a_stream_url_streams_the_turn_and_no_token_or_key_is_logged(devhost_workdir: Path) -> None:
    host = DevHostProcess.start(devhost_workdir, args=["-v"], env={"SCRIPTED_CHUNK_DELAY_MS": "5"}, name="tokens")
    try:
        with httpx.Client(timeout=30) as client:
            agent = agent_names(client, host.api)[0]
            started = client.post(f"{host.api}/agents/{agent}/run?code=secret-function-key", json={"message": "Bergen"})
            assert started.status_code == 202
            stream_url = started.json()["stream_url"]
            token = parse_qs(urlsplit(stream_url).query)["token"][0]
            streamed = client.get(f"{host.url}{stream_url}", headers={"Accept": "text/plain"})
            committed = committed_turn(
                client, host.api, agent, started.json()["session_id"], started.json()["correlation_id"]
            )
            refused = client.get(f"{host.url}{stream_url}".replace(token, token[:-3] + "abc"))
    finally:
        host.stop()
    assert streamed.status_code == 200 and streamed.text == committed["response"]
    assert refused.status_code == 401
    log = host.log()
    assert "GET /api/streams/" in log, "request logging is on"
    assert token not in log and token[:40] not in log
    assert "secret-function-key" not in log
    assert "token=[redacted]" in log and "code=[redacted]" in log
