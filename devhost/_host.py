"""The local host: starts Valkey, the durable backend and worker, then serves the Function App's HTTP functions."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from ._compat import agents_of, callback_of
from ._durable import LoopbackOrchestrationBackend, start_agent_worker
from ._durable_client import DurableClientShim
from ._durable_webhooks import durable_webhooks
from ._functions_http import FunctionsHttpApp, HttpFunction, http_functions_of
from ._orchestration_functions import orchestration_functions_of
from ._valkey import EmbeddedValkey, configured_valkey

logger = logging.getLogger("devhost")

# Query values that grant access: never written to the log.
_SECRET_QUERY_VALUE = re.compile(r"(?i)\b(token|code)=[^&\s\"]*")


class RedactSecrets(logging.Filter):
    """Blanks stream tokens and function keys in the request lines of uvicorn's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY_VALUE.sub(r"\1=[redacted]", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class HostOptions:
    """What the command line asked for (see ``python -m devhost --help``)."""

    host: str = "127.0.0.1"
    port: int = 7071
    backend: str | None = None
    backend_port: int = 0
    valkey_port: int | None = None
    worker: bool = True
    max_concurrent_turns: int = 32
    app: str = "function_app:app"  # module:attribute of the function app
    ready_file: str | None = None
    verbose: bool = False
    telemetry: str = ""  # where OpenTelemetry data goes (see _telemetry); empty: nowhere


class HostStartError(RuntimeError):
    """A part of the host could not start, said in one line (a port given on the command line is taken)."""


def bind_listening_socket(host: str, port: int) -> socket.socket:
    """Bind the HTTP port before anything else starts, so that a port in use fails fast and plainly.

    Raises:
        OSError: When the address cannot be bound (in use, not local, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _route_prefix(app_dir: Path) -> str:
    # host.json may change the "api" prefix (extensions.http.routePrefix); honour it as the host does.
    try:
        host_json = json.loads((app_dir / "host.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "api"
    prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix")
    return prefix if isinstance(prefix, str) else "api"


def _describe_model(agent: Any) -> str:
    client = getattr(agent, "client", None) or getattr(agent, "chat_client", None)
    if client is None:
        return type(agent).__name__
    kind = type(client).__name__
    model = getattr(client, "model", None) or getattr(client, "model_id", None)
    if "scripted" in kind.lower() or "offline" in kind.lower():
        return f"{kind} (offline scripted model, no network)"
    return f"{kind} ({model})" if model else kind


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (``function_app:app`` by default) and return the function app it names.

    Raises:
        HostStartError: When the module cannot be imported, or the attribute is not a v2 function app.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise HostStartError(f"cannot import {module_name} (from --app {spec}): {error}") from error
    app = getattr(module, attribute, None)
    if app is None or not callable(getattr(app, "get_functions", None)):
        raise HostStartError(f"{module_name}.{attribute} is not an azure.functions FunctionApp (--app {spec})")
    return app


class _DevServer(uvicorn.Server):
    """uvicorn, ending the app's open streams as soon as shutdown starts instead of cancelling them later."""

    def __init__(self, config: uvicorn.Config, app: FunctionsHttpApp) -> None:
        super().__init__(config)
        self._functions_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._functions_app.end_streams()
        await super().shutdown(sockets)


class LocalHost:
    """Everything ``python -m devhost`` runs, started in order and stopped in reverse.

    Args:
        options: The parsed command line.
    """

    def __init__(self, options: HostOptions) -> None:
        self.options = options
        self._valkey: EmbeddedValkey | None = None
        self._backend: LoopbackOrchestrationBackend | None = None
        self._worker: Any = None
        self._client: DurableClientShim | None = None
        self._app: Any = None

    def start(self) -> None:
        """Start Valkey (unless configured), import the app, start the backend (unless shared) and the worker.

        Raises:
            HostStartError: When the embedded Valkey or the backend cannot listen on the port asked for.
        """
        opts = self.options
        if configured_valkey(os.environ) is None:
            self._valkey = EmbeddedValkey(opts.valkey_port)
            try:
                self._valkey.start()
            except OSError as error:
                raise HostStartError(
                    f"cannot start the embedded Valkey: {error} (choose another --valkey-port)"
                ) from error
        if str(PROJECT_ROOT) not in sys.path:
            sys.path.insert(0, str(PROJECT_ROOT))
        # Imported only now: the app reads its Valkey settings from the environment when imported.
        self._app = load_app(opts.app)

        address = opts.backend
        if address is None:
            self._backend = LoopbackOrchestrationBackend("127.0.0.1", opts.backend_port)
            try:
                address = self._backend.start()
            except OSError as error:
                raise HostStartError(
                    f"cannot start the durable backend: {error} (choose another --backend-port)"
                ) from error
        self._backend_address = address
        self._client = DurableClientShim(address)
        if opts.worker:
            self._worker = start_agent_worker(address, self._app, max_concurrent_turns=opts.max_concurrent_turns)

    async def serve(self, sock: socket.socket) -> None:
        """Serve the app's HTTP functions on ``sock`` until Ctrl-C or SIGTERM (call :meth:`start` first)."""
        functions, others = http_functions_of(self._app, _route_prefix(PROJECT_ROOT))
        functions = sorted(functions + durable_webhooks(), key=lambda f: f.route.precedence)
        landing = next((f.route.template for f in functions if f.route.template.endswith("/chat")), None)
        asgi = FunctionsHttpApp(functions, self._client, landing_route=landing, on_shutdown=self._close_connections)
        config = uvicorn.Config(
            asgi,
            lifespan="on",
            log_level="info" if self.options.verbose else "warning",
            access_log=self.options.verbose,
            # Open SSE streams would hold a graceful shutdown forever; their readers resume anyway.
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        logging.getLogger("uvicorn.access").addFilter(RedactSecrets())
        server = _DevServer(config, asgi)
        self._print_banner(functions, others)
        await server.serve(sockets=[sock])

    async def _close_connections(self) -> None:
        # Runs in the ASGI lifespan shutdown, on the serving loop, before uvicorn hands the signal on
        # (after that, asyncio cancels whatever the loop still awaits).
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.aclose(), timeout=3)
        # The app's callback (its Valkey buffer) holds connections opened on this loop.
        aclose = getattr(callback_of(self._app), "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(aclose(), timeout=3)

    def stop(self, worker_grace: float = 3.0) -> None:
        """Stop every part that was started, in reverse order (idempotent, never raises).

        Args:
            worker_grace: Seconds to let the worker finish what it runs; a turn still running after
                that is abandoned (it stays in the backend's queue for a host that shares it).
        """
        if self._worker is not None:
            stopper = threading.Thread(target=self._worker.stop, name="devhost-worker-stop", daemon=True)
            stopper.start()
            stopper.join(worker_grace)
            self._worker = None
        if self._backend is not None:
            with contextlib.suppress(Exception):
                self._backend.stop(grace=1)
            self._backend = None
        if self._valkey is not None:
            with contextlib.suppress(Exception):
                self._valkey.stop()
            self._valkey = None
        if self.options.ready_file:
            with contextlib.suppress(OSError):
                os.unlink(self.options.ready_file)

    def force_stop(self) -> None:
        """Kill what would outlive the process (the embedded valkey-server) when a second Ctrl-C cuts the stop short."""
        if self._valkey is not None:
            with contextlib.suppress(Exception):
                self._valkey.kill()

    def _print_banner(self, functions: list[HttpFunction], others: list[str]) -> None:
        opts = self.options
        base = f"http://{opts.host}:{opts.port}"
        valkey = (
            f"{self._valkey.address} (embedded valkey-server, stopped with the host)"
            if self._valkey
            else f"{configured_valkey(os.environ)} (configured)"
        )
        backend = (
            f"in-memory Durable Task backend on {self._backend_address} (started here)"
            if self._backend
            else f"connected to {self._backend_address} (--backend)"
        )
        agents = agents_of(self._app)
        names = ", ".join(f"dafx-{name}" for name in agents) or "none"
        durable = orchestration_functions_of(self._app)
        hosted = [f"entities {names}"] if agents else []
        if durable.orchestrators:
            hosted.append(f"orchestrators {', '.join(durable.orchestrators)}")
        if durable.activities:
            hosted.append(f"activities {', '.join(durable.activities)}")
        worker = (
            ("; ".join(hosted) or "nothing to host")
            if self._worker
            else "off (--no-worker): another host runs the entities, orchestrators and activities"
        )
        models = "; ".join(f"{getattr(a, 'name', '?')}: {_describe_model(a)}" for a in agents.values()) or "none"
        chat = next((f.route.template for f in functions if f.route.template.endswith("/chat")), None)
        lines = [
            f"devhost: {opts.app} running locally, no Azure tooling",
            f"  URL       {base}" + (f"  (chat page: {base}{chat})" if chat else ""),
            f"  Valkey    {valkey}",
            f"  Durable   {backend}",
            f"  Worker    {worker}",
            f"  Model     {models}",
            "  Telemetry "
            + (
                opts.telemetry
                or "off (OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER = console or otlp)"
            ),
            "  Auth      function keys are not checked locally (as with func start)",
            "  Functions",
        ]
        for f in functions:
            if f.name.startswith("durable-"):
                continue
            methods = ",".join(sorted(f.methods)) or "ANY"
            lines.append(f"    {methods:<10} {f.route.template}  ({f.name})")
        if others:
            lines.append(f"    hosted by the durable worker, not over HTTP: {', '.join(others)}")
        lines.append(
            f"  Instances {base}/runtime/webhooks/durabletask/instances/{{instanceId}}: status, events, terminate"
        )
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)
        if opts.ready_file:
            info = {
                "url": base,
                "valkey": self._valkey.address if self._valkey else configured_valkey(os.environ),
                "backend": self._backend_address,
                "worker": bool(self._worker),
                "pid": os.getpid(),
                "started_at": time.time(),
            }
            tmp = f"{opts.ready_file}.tmp"
            Path(tmp).write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, opts.ready_file)
