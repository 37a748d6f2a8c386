"""Fixtures of the Function App tests: function_app.py loaded against the test Valkey, a durable client
double that runs the entity functions, and the HTTP functions served on a real socket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from types import ModuleType

import httpx
import pytest

from tests.app.app_harness import DurableClientDouble, entity_functions, load_function_app, serve, starlette_app_for
from tests.valkey_servers import ValkeyProcess
from valkey_buffer import ValkeyStreamBuffer


def app_settings(valkey_server: ValkeyProcess) -> dict[str, str]:
    """The app settings of the app under test: the test Valkey, short timeouts, the scripted model."""
    return {
        "VALKEY_HOST": valkey_server.host,
        "VALKEY_PORT": str(valkey_server.port),
        "VALKEY_READ_BLOCK_MS": "1000",
        "VALKEY_READ_IDLE_TIMEOUT_SECONDS": "10",
        "SCRIPTED_CHUNK_DELAY_MS": "2",
        "STREAM_HEARTBEAT_SECONDS": "5",
        "STREAM_MAX_DURATION_SECONDS": "60",
        "AZURE_OPENAI_ENDPOINT": "",
        "AZURE_OPENAI_DEPLOYMENT": "",
        "ALLOW_SYSTEM_ROLE_MESSAGES": "",
    }


@pytest.fixture(scope="session")
def app_module(valkey_server: ValkeyProcess) -> Iterator[ModuleType]:
    """``function_app.py`` loaded as its own module, with settings that point at the test Valkey."""
    yield load_function_app(app_settings(valkey_server), f"function_app_under_test_{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def buffer(app_module: ModuleType) -> AsyncIterator[ValkeyStreamBuffer]:
    """The app's own buffer; its clients of this test's event loop are closed afterwards."""
    yield app_module.buffer
    await app_module.buffer.aclose()


@pytest.fixture
def durable(app_module: ModuleType) -> DurableClientDouble:
    """A durable client double that runs the app's entity functions when signalled."""
    return DurableClientDouble(entities=entity_functions(app_module.app))


@pytest.fixture
async def base_url(
    app_module: ModuleType, durable: DurableClientDouble, buffer: ValkeyStreamBuffer
) -> AsyncIterator[str]:
    """The app's HTTP functions on uvicorn; the base URL, e.g. ``http://127.0.0.1:PORT``."""
    async with serve(starlette_app_for(app_module.app, durable)) as url:
        yield url
    await durable.wait_idle()


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the served app."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client
