"""Fixtures of the telemetry tests: the local host's pieces in this process, where the SDK's in-memory
exporters see every span and metric: function_app.py against the test Valkey, the Durable Task SDK's
in-memory backend and agent worker, and the app's HTTP functions served by devhost's ASGI app."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from devhost import DurableClientShim, FunctionsHttpApp, LoopbackOrchestrationBackend, http_functions_of
from devhost._durable import start_agent_worker
from devhost._functions_http import HttpFunction
from tests.app.app_harness import load_function_app, serve
from tests.valkey_servers import ValkeyProcess

AGENT = "TravelAgent"


@dataclass
class LocalPieces:
    """The app module, its HTTP functions and the durable backend's address."""

    module: ModuleType
    functions: list[HttpFunction]
    backend_address: str


def _settings(valkey_server: ValkeyProcess) -> dict[str, str]:
    return {
        "VALKEY_HOST": valkey_server.host,
        "VALKEY_PORT": str(valkey_server.port),
        "VALKEY_READ_BLOCK_MS": "1000",
        "VALKEY_READ_IDLE_TIMEOUT_SECONDS": "15",
        # Slow enough to cut a stream after a few chunks and resume while the turn still runs.
        "SCRIPTED_CHUNK_DELAY_MS": "20",
        "STREAM_HEARTBEAT_SECONDS": "5",
        "STREAM_MAX_DURATION_SECONDS": "60",
        "AZURE_OPENAI_ENDPOINT": "",
        "AZURE_OPENAI_DEPLOYMENT": "",
        "ALLOW_SYSTEM_ROLE_MESSAGES": "",
    }


@pytest.fixture(scope="module")
def local_pieces(valkey_server: ValkeyProcess, otel_sdk: Any) -> Iterator[LocalPieces]:
    """What ``python -m devhost`` runs, minus uvicorn's own loop: the backend and the worker in threads."""
    module = load_function_app(_settings(valkey_server), f"function_app_telemetry_{uuid.uuid4().hex[:8]}")
    functions, _ = http_functions_of(module.app)
    backend = LoopbackOrchestrationBackend("127.0.0.1", 0)
    address = backend.start()
    worker = start_agent_worker(address, module.app, max_concurrent_turns=4)
    yield LocalPieces(module=module, functions=functions, backend_address=address)
    stopper = threading.Thread(target=worker.stop, daemon=True)
    stopper.start()
    stopper.join(5)
    backend.stop(grace=1)


@pytest.fixture
async def api(local_pieces: LocalPieces) -> AsyncIterator[str]:
    """The app's HTTP functions on a real socket, as devhost serves them: the base URL ``.../api``."""
    client = DurableClientShim(local_pieces.backend_address)
    try:
        async with serve(FunctionsHttpApp(local_pieces.functions, client)) as url:
            yield f"{url}/api"
    finally:
        await client.aclose()
        await local_pieces.module.buffer.aclose()
