"""Local host for ``function_app.app``: no Azure Functions Core Tools, no Azurite, no Azure.

``python -m devhost`` serves the app's HTTP functions on http://127.0.0.1:7071 by calling the very
handlers the app registers, backs their durable client bindings with the Durable Task SDK's in-memory
backend, hosts the app's agents as durable entities with the app's default callback (its Valkey
buffer), and starts an embedded ``valkey-server`` unless ``VALKEY_HOST`` or ``VALKEY_URL`` points at
one. Everything it needs from the app comes from ``app``; what it relies on in other libraries beyond
their public API is in ``_compat``.
"""

from __future__ import annotations

from ._cli import main
from ._durable import LoopbackOrchestrationBackend
from ._durable_client import DurableClientShim
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
