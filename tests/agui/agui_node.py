"""The official AG-UI client (``@ag-ui/client`` 1.0 ``HttpAgent``) run by node: ``run_client.mjs`` drives runs
against a route and reports, per run, what the client's verified event stream showed."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
CLIENT = HERE / "node_modules" / "@ag-ui" / "client"


def client_missing() -> str | None:
    """Why the client cannot run here (no node, or ``npm ci`` not run in tests/agui), else ``None``."""
    if shutil.which("node") is None:
        return "node is not installed (the AG-UI client tests need node and npm)"
    if not CLIENT.is_dir():
        return "@ag-ui/client is not installed: run `npm ci` in tests/agui"
    return None


def run_client(url: str, runs: list[dict[str, Any]], thread: str | None = None) -> dict[str, Any]:
    """Run ``runs`` one after the other on one thread of the AG-UI route at ``url``; what each showed."""
    spec = {"url": url, "threadId": thread or uuid.uuid4().hex, "runs": runs}
    done = subprocess.run(
        ["node", str(HERE / "run_client.mjs"), json.dumps(spec)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
