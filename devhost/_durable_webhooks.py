"""The durable extension's instance management API, on devhost: the URLs ``create_check_status_response`` hands out.

On Azure these are the extension's webhooks under ``/runtime/webhooks/durabletask/instances/{id}``:
status (GET), raise an event (POST ``/raiseEvent/{eventName}``), terminate (POST ``/terminate``) and
purge (DELETE). Here they are HTTP functions like the app's, served by the same ASGI app, answering
through the durable client shim. Status codes follow the extension's HttpApiHandler.cs: 200 for an
instance that ended, 202 while it runs, 404 for an unknown instance, 410 when it cannot take the
event or the termination any more.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._functions_http import HttpFunction
from ._routing import RouteTemplate

WEBHOOK_ROOT = "runtime/webhooks/durabletask/instances"

_ENDED = {"Completed", "Failed", "Terminated", "Canceled"}


def _status_json(status: Any) -> dict[str, Any]:
    return {
        "name": status.name,
        "instanceId": status.instance_id,
        "runtimeStatus": status.runtime_status.value if status.runtime_status else None,
        "input": status.input_,
        "customStatus": status.custom_status,
        "output": status.output,
        "createdTime": status.created_time.isoformat() if status.created_time else None,
        "lastUpdatedTime": status.last_updated_time.isoformat() if status.last_updated_time else None,
    }


async def _status(req: Request, client: Any) -> Response:
    status = await client.get_status(req.path_params["instanceId"])
    if not status:
        return JSONResponse({"error": "no such instance"}, status_code=404)
    body = _status_json(status)
    return JSONResponse(body, status_code=200 if body["runtimeStatus"] in _ENDED else 202)


async def _raise_event(req: Request, client: Any) -> Response:
    raw = await req.body()
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return JSONResponse({"error": "the event data must be JSON"}, status_code=400)
    return await _on_running(
        client, req.path_params["instanceId"], lambda i: client.raise_event(i, req.path_params["eventName"], data)
    )


async def _terminate(req: Request, client: Any) -> Response:
    reason = req.query_params.get("reason", "")
    return await _on_running(client, req.path_params["instanceId"], lambda i: client.terminate(i, reason))


async def _purge(req: Request, client: Any) -> Response:
    result = await client.purge_instance_history(req.path_params["instanceId"])
    if result.instances_deleted == 0:
        return JSONResponse({"error": "no such instance"}, status_code=404)
    return JSONResponse({"instancesDeleted": result.instances_deleted})


async def _on_running(client: Any, instance_id: str, act: Any) -> Response:
    status = await client.get_status(instance_id)
    if not status:
        return JSONResponse({"error": "no such instance"}, status_code=404)
    if status.runtime_status is not None and status.runtime_status.value in _ENDED:
        return JSONResponse({"error": f"the instance is {status.runtime_status.value}"}, status_code=410)
    await act(instance_id)
    return Response(status_code=202)


def _function(name: str, template: str, method: str, handler: Any) -> HttpFunction:
    return HttpFunction(
        name=name,
        route=RouteTemplate(f"{WEBHOOK_ROOT}/{template}", prefix=""),
        methods=frozenset({method}),
        auth_level="anonymous",
        handler=handler,
        request_param="req",
        durable_client_params=["client"],
    )


def durable_webhooks() -> list[HttpFunction]:
    """The instance management routes, as HTTP functions with a durable client binding."""
    return [
        _function("durable-status", "{instanceId}", "GET", _status),
        _function("durable-purge", "{instanceId}", "DELETE", _purge),
        _function("durable-raise-event", "{instanceId}/raiseEvent/{eventName}", "POST", _raise_event),
        _function("durable-terminate", "{instanceId}/terminate", "POST", _terminate),
    ]
