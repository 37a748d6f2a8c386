"""Test harness for the Function App: load function_app.py against a test Valkey, run its entity
functions the way the durable extension does, and serve its HTTP functions on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib.util
import json
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.durable_functions as df
import pytest
import uvicorn
from azure.durable_functions.models.EntityStateResponse import EntityStateResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[2]


def load_function_app(environ: Mapping[str, str], module_name: str) -> ModuleType:
    """Import ``function_app.py`` as a fresh module, with ``environ`` set while it reads its settings.

    The real ``function_app`` module stays untouched, so other tests can import it with their settings.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "function_app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module


_INDEXES: dict[int, list[Any]] = {}


def indexed_functions(app: Any) -> list[Any]:
    """``app.get_functions()``, as the worker indexes it; computed once per app (a second call raises)."""
    if id(app) not in _INDEXES:
        _INDEXES[id(app)] = app.get_functions()
    return _INDEXES[id(app)]


def binding_type(binding: Any) -> str:
    value = binding.type if hasattr(binding, "type") else binding.get_dict_repr()["type"]
    return str(getattr(value, "value", value))


def entity_functions(app: Any) -> dict[str, Callable[[str], str]]:
    """The app's entity trigger functions by entity name, as the worker would invoke them."""
    functions: dict[str, Callable[[str], str]] = {}
    for function in indexed_functions(app):
        trigger = function.get_trigger()
        if trigger is not None and binding_type(trigger) == "entityTrigger":
            functions[function.get_function_name()] = function.get_user_function()
    return functions


def entity_context_json(name: str, key: str, state: str | None, operation: str, operation_input: Any) -> str:
    """The JSON the durable extension hands an entity function: its id, raw state and one operation.

    The client posts the operation input as JSON; the extension passes that JSON text along as a JSON
    string (``DurableEntityContext.get_input`` decodes both layers).
    """
    return json.dumps(
        {
            "self": {"name": name, "key": key},
            "exists": state is not None,
            "state": state,
            "batch": [{"name": operation, "input": json.dumps(json.dumps(operation_input))}],
        }
    )


@dataclass
class Signal:
    entity_name: str
    key: str
    operation: str
    operation_input: Any


@dataclass
class DurableClientDouble:
    """Stands in for ``DurableOrchestrationClient``: records signals and, unless told not to, runs the
    signalled entity function in a worker thread as the extension would, keeping each entity's state."""

    entities: dict[str, Callable[[str], str]]
    run_entities: bool = True
    signals: list[Signal] = field(default_factory=list)
    states: dict[tuple[str, str], str] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    async def signal_entity(self, entity_id: df.EntityId, operation_name: str, operation_input: Any = None) -> None:
        # Like the real client, the input must survive JSON.
        payload = json.loads(json.dumps(operation_input))
        self.signals.append(Signal(entity_id.name, entity_id.key, operation_name, payload))
        if self.run_entities:
            task = asyncio.create_task(self._run(entity_id.name, entity_id.key, operation_name, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def read_entity_state(self, entity_id: df.EntityId) -> EntityStateResponse:
        state = self.states.get((entity_id.name, entity_id.key))
        if state is None:
            return EntityStateResponse(False)
        return EntityStateResponse(True, json.loads(state))

    async def wait_idle(self) -> None:
        """Wait until every signalled operation has run."""
        if self._tasks:
            async with asyncio.timeout(30):
                await asyncio.gather(*self._tasks)

    async def _run(self, name: str, key: str, operation: str, operation_input: Any) -> None:
        # The extension runs one batch at a time per entity.
        async with self._locks.setdefault((name, key), asyncio.Lock()):
            context = entity_context_json(name, key, self.states.get((name, key)), operation, operation_input)
            # An invocation of its own, as on Azure: nothing of the signalling request's context (its
            # trace included) reaches the entity but what the operation input carries.
            entity = functools.partial(contextvars.Context().run, self.entities[name], context)
            output = json.loads(await asyncio.get_running_loop().run_in_executor(None, entity))
            if output["entityExists"]:
                self.states[(name, key)] = output["entityState"]
            self.results.extend(output["results"])


def starlette_app_for(app: Any, durable_client: Any) -> Starlette:
    """Serve the app's HTTP functions at ``/api/{route}``, calling the very handlers it registered.

    Route and methods come from the function index; a durable client binding gets ``durable_client``
    (the handler wrapped by azure-functions-durable keeps the original as ``client_function``).
    """
    routes: list[Route] = []
    for function in indexed_functions(app):
        trigger = function.get_trigger()
        if trigger is None or binding_type(trigger) != "httpTrigger":
            continue
        handler = function.get_user_function()
        client_params = [b.name for b in function.get_bindings() if binding_type(b) == "durableClient"]
        if client_params:
            handler = handler.client_function
        routes.append(
            Route(
                f"/api/{trigger.route}",
                _endpoint(handler, trigger.name, client_params, durable_client),
                methods=[str(getattr(m, "value", m)) for m in trigger.methods],
            )
        )
    return Starlette(routes=routes)


def _endpoint(handler: Any, request_param: str, client_params: list[str], durable_client: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        kwargs: dict[str, Any] = {request_param: request}
        kwargs.update(dict.fromkeys(client_params, durable_client))
        return await handler(**kwargs)

    return endpoint


@contextlib.asynccontextmanager
async def serve(asgi_app: Any) -> AsyncIterator[str]:
    """Run ``asgi_app`` on uvicorn on a free loopback port, in this event loop; yield its base URL."""
    config = uvicorn.Config(
        asgi_app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
