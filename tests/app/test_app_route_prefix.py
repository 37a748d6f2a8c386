"""host.json's route prefix: read in one place, and carried by the stream URLs and span names of the routes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from http_api import AgentHttpApi, Routes, StreamSettings, route_prefix_from_host_json
from tests.app.app_harness import DurableClientDouble, serve
from tests.otel_capture import OtelCapture
from valkey_buffer import ValkeyStreamBuffer


@pytest.mark.parametrize(
    ("host_json", "prefix"),
    [
        (None, "api"),
        ({"version": "2.0"}, "api"),
        ({"extensions": {"http": {"routePrefix": ""}}}, ""),
        ({"extensions": {"http": {"routePrefix": "v1"}}}, "v1"),
    ],
)
def test_the_route_prefix_is_host_jsons_or_api(tmp_path: Path, host_json: dict | None, prefix: str) -> None:
    if host_json is not None:
        (tmp_path / "host.json").write_text(json.dumps(host_json), encoding="utf-8")
    assert route_prefix_from_host_json(tmp_path) == prefix


def test_the_apps_own_host_json_serves_the_routes_under_api() -> None:
    assert route_prefix_from_host_json(Path(__file__).parents[2]) == "api"


async def test_without_a_prefix_the_stream_url_and_the_span_name_have_none(
    buffer: ValkeyStreamBuffer, durable: DurableClientDouble, otel: OtelCapture
) -> None:
    api = AgentHttpApi(buffer=buffer, agent_names=["TravelAgent"], stream_settings=StreamSettings(), route_prefix="")

    async def run(request: Request) -> Response:
        return await api.run_turn(request, durable)

    async def follow(request: Request) -> Response:
        return await api.stream_with_token(request, durable)

    app = Starlette(
        routes=[Route(f"/{Routes.RUN}", run, methods=["POST"]), Route(f"/{Routes.STREAM_WITH_TOKEN}", follow)]
    )
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        started = (await http.post("/agents/TravelAgent/run", json={"message": "Porto"})).json()
        assert started["stream_url"].startswith(f"/streams/{started['session_id']}?")
        streamed = await http.get(started["stream_url"], headers={"Accept": "text/plain"})
        await durable.wait_idle()

    assert streamed.status_code == 200 and streamed.text
    await otel.wait_for_span(lambda s: s.name == "POST /agents/{name}/run", what="the route span")
