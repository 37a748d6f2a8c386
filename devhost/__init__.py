"""Local host for ``function_app.app``: no Azure Functions Core Tools, no Azurite, no Azure.

``python -m devhost`` serves the app's HTTP functions on http://127.0.0.1:7071 by calling the very
handlers the app registers, backs their durable client bindings with the Durable Task SDK's in-memory
backend, hosts the agents as durable entities with the app's Valkey buffer as callback, and starts an
embedded ``valkey-server`` unless ``VALKEY_HOST`` or ``VALKEY_URL`` points at one.
"""

from __future__ import annotations

from ._cli import main
from ._durable import DurableClientShim, LoopbackOrchestrationBackend
from ._functions_http import FunctionsHttpApp, http_functions_of
from ._host import HostOptions, LocalHost

__all__ = [
    "DurableClientShim",
    "FunctionsHttpApp",
    "HostOptions",
    "LocalHost",
    "LoopbackOrchestrationBackend",
    "http_functions_of",
    "main",
]
