"""An ASGI app that serves the HTTP functions of an ``azure.functions.FunctionApp`` by calling their handlers.

It does what the Functions host and the Python worker do for an app that uses the HTTP streaming
types (``azurefunctions-extensions-http-fastapi``): match the request against each function's route
and methods, put the route values into ``request.path_params``, call the registered handler with the
request as its trigger argument and a durable client for its ``durableClient`` binding, and send the
response object it returns as it is, streaming included.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ._compat import user_function_of
from ._durable_client import UnsupportedEntityKeyError
from ._indexing import functions_of
from ._routing import RouteTemplate

logger = logging.getLogger("devhost")

_HTTP_TRIGGER = "httpTrigger"
_DURABLE_CLIENT = "durableClient"


@dataclass
class HttpFunction:
    """One HTTP-triggered function as the host sees it after indexing."""

    name: str
    route: RouteTemplate
    methods: frozenset[str]  # empty: every method
    auth_level: str
    handler: Callable[..., Any]
    request_param: str
    durable_client_params: list[str] = field(default_factory=list)
    wants_context: bool = False


@dataclass(frozen=True)
class InvocationContext:
    """The few ``func.Context`` attributes a handler may read."""

    invocation_id: str
    function_name: str
    function_directory: str = ""
    trace_context: Any = None
    retry_context: Any = None


def _binding_type(binding: Any) -> str:
    return str(getattr(binding, "type", "") or "")


def http_functions_of(app: Any, route_prefix: str = "api") -> tuple[list[HttpFunction], list[str]]:
    """Index an ``azure.functions.FunctionApp`` the way the Python worker does, through ``get_functions()``.

    Args:
        app: The function app (``function_app.app``).
        route_prefix: The host's HTTP route prefix.

    Returns:
        The HTTP functions, most specific route first, and the names of the other functions (entity
        triggers and the like, which the durable worker hosts instead).
    """
    http: list[HttpFunction] = []
    others: list[str] = []
    for function in functions_of(app):
        trigger = function.get_trigger()
        name = function.get_function_name() or function.get_user_function().__name__
        if trigger is None or _binding_type(trigger) != _HTTP_TRIGGER:
            others.append(name)
            continue
        handler = function.get_user_function()
        client_params = [b.name for b in function.get_bindings() if _binding_type(b) == _DURABLE_CLIENT]
        if client_params:
            # There is no durable extension here to feed azure-functions-durable's client wrapper:
            # call the function it wraps and hand it the shim where the rich client would go.
            handler = user_function_of(handler)
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in (getattr(trigger, "methods", None) or []))
        parameters = inspect.signature(handler).parameters
        http.append(
            HttpFunction(
                name=name,
                route=RouteTemplate(getattr(trigger, "route", None) or name, route_prefix),
                methods=methods,
                auth_level=str(getattr(getattr(trigger, "auth_level", None), "value", "function")),
                handler=handler,
                request_param=trigger.name,
                durable_client_params=client_params,
                wants_context="context" in parameters,
            )
        )
    http.sort(key=lambda f: f.route.precedence)
    return http, others


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _to_response(result: Any) -> Response:
    """Turn what a handler returned into a response, as the worker does for the return types it accepts."""
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=204)
    if isinstance(result, str):
        return PlainTextResponse(result)
    if isinstance(result, bytes):
        return Response(result, media_type="application/octet-stream")
    get_body = getattr(result, "get_body", None)
    if callable(get_body) and hasattr(result, "status_code"):
        # A classic func.HttpResponse.
        return Response(
            get_body(),
            status_code=result.status_code,
            headers=dict(result.headers),
            media_type=getattr(result, "mimetype", None),
        )
    return Response(json.dumps(result), media_type="application/json")


class FunctionsHttpApp:
    """ASGI app serving a function app's HTTP functions.

    Args:
        functions: The HTTP functions from :func:`http_functions_of`.
        durable_client: The object handed to every ``durableClient`` binding.
        landing_route: Where ``GET /`` redirects to (the chat page), if anywhere.
        on_shutdown: Awaited when the server shuts down (ASGI lifespan), on the serving loop.
    """

    def __init__(
        self,
        functions: list[HttpFunction],
        durable_client: Any,
        landing_route: str | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._functions = functions
        self._durable_client = durable_client
        self._landing_route = landing_route
        self._on_shutdown = on_shutdown
        self._closing = asyncio.Event()

    def end_streams(self) -> None:
        """End every streaming response at its next step, as a stream that reached its time limit ends.

        Called when the server starts shutting down: open SSE responses would otherwise hold the
        shutdown until they are cancelled mid-write. Their clients resume with ``Last-Event-ID``.
        """
        self._closing.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self._dispatch(scope, receive)
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._until_closing(response.body_iterator)
        await response(scope, receive, send)

    async def _until_closing(self, body: AsyncIterator[Any]) -> AsyncIterator[Any]:
        closing = asyncio.ensure_future(self._closing.wait())
        step: asyncio.Future[Any] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(body))
                await asyncio.wait((step, closing), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    return
                finished, step = step, None
                try:
                    item = finished.result()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            # Reached on closing, and when the client disconnects: Starlette then cancels this
            # generator while `step` is still inside anext(body). The step goes first (cancelled, it
            # runs the body's own cleanup and the stream reader leaves the live feed); only then is
            # the body, no longer running, closed. Shielded, bounded: Starlette cancels through an
            # anyio cancel scope, which would cut every await here short and leave the step behind.
            closing.cancel()
            with anyio.move_on_after(5, shield=True):
                if step is not None:
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await step
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_shutdown is not None:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        method = scope["method"].upper()
        if path in ("", "/") and self._landing_route and method in ("GET", "HEAD"):
            return RedirectResponse(self._landing_route, status_code=307)

        allowed: set[str] = set()
        for function in self._functions:
            params = function.route.match(path)
            if params is None:
                continue
            if function.methods and method not in function.methods:
                allowed |= function.methods
                continue
            return await self._invoke(function, params, scope, receive)
        if allowed:
            return _json_error(405, "method not allowed", {"Allow": ", ".join(sorted(allowed))})
        return _json_error(404, "no function serves this route")

    async def _invoke(self, function: HttpFunction, params: dict[str, str], scope: Scope, receive: Receive) -> Response:
        request = Request({**scope, "path_params": params}, receive)
        kwargs: dict[str, Any] = {function.request_param: request}
        for name in function.durable_client_params:
            kwargs[name] = self._durable_client
        if function.wants_context:
            kwargs["context"] = InvocationContext(invocation_id=str(uuid.uuid4()), function_name=function.name)
        try:
            if inspect.iscoroutinefunction(function.handler):
                result = await function.handler(**kwargs)
            else:
                # The worker runs synchronous functions on its thread pool; so does this host.
                result = await run_in_threadpool(function.handler, **kwargs)
        except UnsupportedEntityKeyError as error:
            return _json_error(400, str(error))
        except Exception:
            logger.exception("function %s failed", function.name)
            return _json_error(500, f"function {function.name} failed; see the host log")
        return _to_response(result)
