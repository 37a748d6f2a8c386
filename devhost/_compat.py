"""What devhost relies on in other libraries beyond their documented API: named here, checked at import.

devhost stands in for the Functions host and the durable extension with parts of the Durable Task
SDK, azure-functions-durable and Agent Framework that are not all public: the SDK's generated gRPC
stubs and its in-memory backend's private state, the durable-client wrapper's hold on the function
it wraps, and where ``AgentFunctionApp`` keeps its agents and default callback; and OpenTelemetry's
logs API, which still lives under private module names. The private modules are imported here and
nowhere else; each behaviour is named in :data:`RELIANCES` with a probe, and
:func:`check_devhost_dependencies` runs them when devhost is imported. A release that changes one
stops devhost at once with a message naming it and the versions this code was written for, not
half-way through a turn.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

import azure.durable_functions as df
from agent_framework_azurefunctions import AgentFunctionApp
from durabletask.testing import InMemoryOrchestrationBackend

WRITTEN_FOR: dict[str, str] = {
    "durabletask": "1.12.0",
    "azure-functions-durable": "1.7.0",
    "agent-framework-azurefunctions": "1.0.0b260922",
    "opentelemetry-sdk": "1.45.1",
}
"""The releases whose private names and behaviours this module describes."""

BACKEND_STATE = ("_port", "_server", "_shutdown_event")
"""The in-memory backend's private attributes that ``LoopbackOrchestrationBackend.start`` sets as the SDK's own
``start`` does (it binds one address instead of every interface, which the SDK offers no option for)."""


class IncompatibleDependencyError(RuntimeError):
    """An installed library lacks a private name or behaviour devhost relies on."""


def _versions(packages: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in packages.items())


def _installed() -> dict[str, str]:
    installed: dict[str, str] = {}
    for name in WRITTEN_FOR:
        try:
            installed[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed[name] = "(not installed)"
    return installed


def _fail(what: str, cause: str = "") -> NoReturn:
    raise IncompatibleDependencyError(
        f"devhost relies on {what}, which the installed packages do not offer{cause}. "
        f"Installed: {_versions(_installed())}. Written for: {_versions(WRITTEN_FOR)}. "
        "Install those (requirements.txt and requirements-dev.txt pin them) or update devhost/_compat.py."
    )


def _private_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        _fail(f"the module {name}", f" ({error})")


sidecar_stubs = _private_module("durabletask.internal.orchestrator_service_pb2_grpc")
"""The SDK's generated gRPC stubs of the sidecar service, which its in-memory backend implements."""

EntityStateResponse: Any = _private_module("azure.durable_functions.models.EntityStateResponse").EntityStateResponse
"""What ``DurableOrchestrationClient.read_entity_state`` returns; not exported by the package itself."""

# OpenTelemetry's logs API and SDK, still under private module names (the OTLP log exporters too, see
# otlp_log_exporter): the SDK is installed with the app's requirements, through azure-monitor-opentelemetry.
_logs_api = _private_module("opentelemetry._logs")
_logs_sdk = _private_module("opentelemetry.sdk._logs")
_logs_export = _private_module("opentelemetry.sdk._logs.export")
set_logger_provider: Callable[..., None] = _logs_api.set_logger_provider
LoggerProvider: Any = _logs_sdk.LoggerProvider
BatchLogRecordProcessor: Any = _logs_export.BatchLogRecordProcessor
SimpleLogRecordProcessor: Any = _logs_export.SimpleLogRecordProcessor
ConsoleLogRecordExporter: Any = _logs_export.ConsoleLogRecordExporter


def otlp_log_exporter(protocol: str) -> Any:
    """The OTLP log exporter class for ``protocol`` (``grpc`` or ``http/protobuf``), imported on first use.

    The exporters are development requirements, imported only when logs are exported over OTLP.
    """
    transport = "grpc" if protocol == "grpc" else "http"
    exporter: Any = _private_module(f"opentelemetry.exporter.otlp.proto.{transport}._log_exporter").OTLPLogExporter
    return exporter


def add_sidecar_servicer(servicer: Any, server: Any) -> None:
    """Serve ``servicer`` on a gRPC ``server`` as the Durable Task sidecar (through the SDK's internal stubs)."""
    sidecar_stubs.add_TaskHubSidecarServiceServicer_to_server(servicer, server)


def user_function_of(handler: Any) -> Any:
    """The function an app registered, out of azure-functions-durable's durable-client wrapper if it has one.

    The wrapper builds the rich durable client from the JSON the durable extension passes; there is
    no extension here, so devhost calls the wrapped function with its own client. The wrapper keeps
    that function as ``client_function``, an attribute of no documented API.
    """
    return getattr(handler, "client_function", handler)


def agents_of(app: Any) -> dict[str, Any]:
    """The agents an ``AgentFunctionApp`` hosts by the name their entity is registered under (its ``agents``).

    That name is the agent's own, or ``{workflow}-{executor id}`` for an agent of a hosted workflow
    (its entity is ``dafx-{that name}``); none for another function app.
    """
    agents = getattr(app, "agents", None)
    return dict(agents) if isinstance(agents, dict) else {}


def callback_of(app: Any) -> Any:
    """The response callback an ``AgentFunctionApp`` gives its agents: the ``default_callback`` it was made with.

    A callback given to ``add_agent`` for one agent is kept only inside that agent's entity function,
    out of reach: devhost hosts every agent with the default one.
    """
    return getattr(app, "default_callback", None)


@dataclass(frozen=True)
class Reliance:
    """One private name or behaviour devhost relies on, and how to see that it is still there.

    Attributes:
        what: The name or behaviour, as the failure message says it.
        holds: True when the installed packages still have it (an exception counts as False).
    """

    what: str
    holds: Callable[[], bool]


def _sidecar_stubs_serve_a_backend() -> bool:
    return callable(getattr(sidecar_stubs, "add_TaskHubSidecarServiceServicer_to_server", None)) and issubclass(
        InMemoryOrchestrationBackend, sidecar_stubs.TaskHubSidecarServiceServicer
    )


def _backend_state_is_where_start_sets_it() -> bool:
    backend = InMemoryOrchestrationBackend(port=0)
    return (
        all(hasattr(backend, name) for name in BACKEND_STATE)
        and backend._port == 0
        and callable(getattr(backend._shutdown_event, "clear", None))
        and "grace" in inspect.signature(backend.stop).parameters
    )


def _entity_state_response_is_made_of_exists_and_state() -> bool:
    response = EntityStateResponse(True, {"probe": 1})
    return response.entity_exists is True and response.entity_state == {"probe": 1}


def _durable_client_wrapper_keeps_the_function() -> bool:
    probe_app = df.DFApp()

    async def probe(req: Any, client: Any) -> None:
        return None

    probe_app.route(route="probe")(probe_app.durable_client_input(client_name="client")(probe))
    (function,) = probe_app.get_functions()
    return user_function_of(function.get_user_function()) is probe


def _agent_app_keeps_agents_and_callback() -> bool:
    callback = object()
    app = AgentFunctionApp(enable_http_endpoints=False, enable_health_check=False, default_callback=callback)
    return isinstance(app.agents, dict) and callback_of(app) is callback and agents_of(app) == {}


RELIANCES: tuple[Reliance, ...] = (
    Reliance(
        "durabletask.internal.orchestrator_service_pb2_grpc.add_TaskHubSidecarServiceServicer_to_server, "
        "serving an InMemoryOrchestrationBackend",
        _sidecar_stubs_serve_a_backend,
    ),
    Reliance(
        f"InMemoryOrchestrationBackend's private {', '.join(BACKEND_STATE)} and stop(grace)",
        _backend_state_is_where_start_sets_it,
    ),
    Reliance(
        "azure.durable_functions.models.EntityStateResponse.EntityStateResponse(exists, state)",
        _entity_state_response_is_made_of_exists_and_state,
    ),
    Reliance(
        "the function an azure-functions-durable client wrapper wraps, as its client_function",
        _durable_client_wrapper_keeps_the_function,
    ),
    Reliance("AgentFunctionApp's agents and default_callback", _agent_app_keeps_agents_and_callback),
    Reliance(
        "OpenTelemetry's LoggerProvider with add_log_record_processor and shutdown",
        lambda: callable(LoggerProvider.add_log_record_processor) and callable(LoggerProvider.shutdown),
    ),
)


def check_devhost_dependencies(reliances: tuple[Reliance, ...] = RELIANCES) -> None:
    """Check every reliance; raise on the first that no longer holds.

    Raises:
        IncompatibleDependencyError: Naming the reliance, the installed versions and the versions this
            code was written for.
    """
    for reliance in reliances:
        try:
            holds = reliance.holds()
        except Exception as error:
            holds, cause = False, f" ({type(error).__name__}: {error})"
        else:
            cause = ""
        if not holds:
            _fail(reliance.what, cause)


check_devhost_dependencies()
