"""The routes' spans: one per request, continuing the caller's trace, open until the response body ends.

Where the span's parent comes from:

- Under the Azure Functions Python worker with ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY`` (or
  ``PYTHON_ENABLE_OPENTELEMETRY``), the worker makes the host's invocation context current before it
  calls the handler. The host (``"telemetryMode": "OpenTelemetry"``) has already recorded the request
  as a server span that continues the caller's ``traceparent``: the route span is its child, of kind
  INTERNAL, so Application Insights counts each request once.
- Anywhere else (the local host, ``func start`` without worker telemetry) nothing is current: the
  route span is the SERVER span, continuing the request's ``traceparent`` header when it has one.

A streaming response keeps its span open until its body ends (the client disconnects, the turn
ends, or the time limit cuts it), so the span lasts as long as the request and the stream reader's
span is its child.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_tracer = trace.get_tracer("http_api")


async def in_route_span(req: Request, http_route: str, respond: Callable[[], Awaitable[Response]]) -> Response:
    """Answer a request with ``respond()`` inside its span, named ``{method} {http_route}``.

    Args:
        req: The request.
        http_route: The route template with the host's prefix (``/api/agents/{name}/stream``).
        respond: Makes the response; a streaming response's body runs in the span, which ends with it.
    """
    span = _start_span(req, http_route)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        response = await respond()
    except BaseException as error:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
        raise
    finally:
        otel_context.detach(token)
    span.set_attribute("http.response.status_code", response.status_code)
    if response.status_code >= 500:
        span.set_status(Status(StatusCode.ERROR))
    if isinstance(response, StreamingResponse):
        response.body_iterator = _BodyInSpan(response.body_iterator, span)
    else:
        span.end()
    return response


def note_turn(session_id: str, correlation_id: str) -> None:
    """Put the ids of the turn a request started on its span (Kusto finds a turn's trace by them)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({"gen_ai.conversation.id": session_id, "agent_stream.correlation_id": correlation_id})


def _start_span(req: Request, http_route: str) -> Span:
    current = otel_context.get_current()
    if trace.get_current_span(current).get_span_context().is_valid:
        parent, kind = current, SpanKind.INTERNAL  # the Functions host recorded the request already
    else:
        parent, kind = propagate.extract(req.headers), SpanKind.SERVER
    attributes: dict[str, Any] = {
        "http.request.method": req.method,
        "http.route": http_route,
        "url.path": req.url.path,
    }
    params = req.path_params
    if params.get("name"):
        attributes["gen_ai.agent.name"] = params["name"]
    if params.get("session_id"):
        attributes["gen_ai.conversation.id"] = params["session_id"]
    correlation_id = params.get("correlation_id") or req.query_params.get("correlation_id")
    if correlation_id:
        attributes["agent_stream.correlation_id"] = correlation_id
    return _tracer.start_span(f"{req.method} {http_route}", context=parent, kind=kind, attributes=attributes)


class _BodyInSpan:
    """A response body that ends its request's span when it ends, and runs each step in that span."""

    def __init__(self, body: Any, span: Span) -> None:
        self._body: AsyncIterator[Any] = body.__aiter__()
        self._span = span
        self._context = trace.set_span_in_context(span)
        self._ended = False

    def __aiter__(self) -> _BodyInSpan:
        return self

    async def __anext__(self) -> Any:
        if self._ended:
            raise StopAsyncIteration
        # Attached and detached within one step: logs of the body carry the request's trace ids.
        token = otel_context.attach(self._context)
        try:
            return await self._body.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except BaseException as error:
            if not isinstance(error, GeneratorExit):
                self._span.set_attribute("error.type", type(error).__name__)
            self._end()
            raise
        finally:
            otel_context.detach(token)

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._span.end()
