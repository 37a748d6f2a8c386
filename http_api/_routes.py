"""The routes: their templates, declared once, the host's route prefix, and the decorator every handler wears.

``function_app.py`` registers each handler under a template from :class:`Routes`; the decorator names
the request's span after the same template and answers the errors the handler raises (see
``_responses.error_response``), so a handler says only what a request gets when all goes well.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from azurefunctions.extensions.http.fastapi import Request, Response

from ._responses import ANSWERED_ERRORS, error_response
from ._telemetry import in_route_span

DEFAULT_ROUTE_PREFIX = "api"


class Routes:
    """The route templates, without the host's prefix (``/api`` unless host.json says otherwise)."""

    RUN = "agents/{name}/run"
    STREAM = "agents/{name}/stream"
    AGUI = "agents/{name}/ag-ui"
    RESUME = "agent/stream/{session_id}"
    STREAM_WITH_TOKEN = "streams/{session_id}"
    SESSION = "agents/{name}/sessions/{session_id}"
    TURN = "agents/{name}/sessions/{session_id}/turns/{correlation_id}"
    TURN_CANCEL = "agents/{name}/sessions/{session_id}/turns/{correlation_id}/cancel"
    WORKFLOW_RUN = "workflow/{name}/run"
    WORKFLOW_STATUS = "workflow/{name}/status/{instanceId}"
    WORKFLOW_RESPOND = "workflow/{name}/respond/{instanceId}/{requestId}"
    WORKFLOW_CANCEL = "workflow/{name}/cancel/{instanceId}"
    WORKFLOW_STREAM = "workflow/{name}/stream/{instanceId}"
    WORKFLOW_AGUI = "workflow/{name}/ag-ui"
    WORKFLOW_PAGE = "workflow/{name}/page"
    HEALTH = "health"
    CHAT = "chat"


def route_prefix_from_host_json(app_dir: Path) -> str:
    """The HTTP route prefix the Functions host serves the routes under: host.json's
    ``extensions.http.routePrefix``, ``api`` when it is not set (an empty prefix is allowed).

    Args:
        app_dir: The folder of ``host.json`` (the Function App's root).
    """
    try:
        host_json = json.loads((app_dir / "host.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DEFAULT_ROUTE_PREFIX
    prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix")
    return prefix if isinstance(prefix, str) else DEFAULT_ROUTE_PREFIX


def route_path(route_prefix: str, route: str) -> str:
    """The path of ``route`` (a template, or a filled-in one) as the host serves it: ``/{prefix}/{route}``."""
    prefix = route_prefix.strip("/")
    return f"/{prefix}/{route}" if prefix else f"/{route}"


class _ServesUnderPrefix(Protocol):
    route_prefix: str


P = ParamSpec("P")
S = TypeVar("S", bound=_ServesUnderPrefix)
Handler = Callable[Concatenate[S, Request, P], Awaitable[Response]]


def route(template: str) -> Callable[[Handler[S, P]], Handler[S, P]]:
    """Decorate a route handler: a span per request named ``{method} /{prefix}/{template}``, and the
    errors of :data:`ANSWERED_ERRORS` it raises answered as JSON errors; any other error propagates.

    Args:
        template: The route template the handler is registered under (a :class:`Routes` value).
    """

    def decorate(handler: Handler[S, P]) -> Handler[S, P]:
        @functools.wraps(handler)
        async def handle(self: S, req: Request, *args: P.args, **kwargs: P.kwargs) -> Response:
            async def answer() -> Response:
                try:
                    return await handler(self, req, *args, **kwargs)
                except ANSWERED_ERRORS as error:
                    return error_response(error)

            return await in_route_span(req, route_path(self.route_prefix, template), answer)

        return handle

    return decorate
