"""Durable execution without Azure: the Durable Task SDK's in-memory backend and its worker.

The HTTP functions' durable client binding is in ``_durable_client``; orchestrator functions run
through the bridge in ``_orchestrations``.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any

import grpc
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker

from ._compat import (
    InMemoryOrchestrationBackend,
    add_sidecar_servicer,
    agents_of,
    callback_of,
)
from ._orchestration_functions import orchestration_functions_of
from ._orchestrations import register_orchestrations

logger = logging.getLogger("devhost")

# The durable SDK's own logs (connections, work items) are not the host's: a logger outside the
# logging tree, with nowhere to go, keeps them out of the console.
SDK_LOGGER = logging.Logger("devhost.durabletask")
SDK_LOGGER.addHandler(logging.NullHandler())


class LoopbackOrchestrationBackend(InMemoryOrchestrationBackend):
    """The in-memory backend, listening on one address only (loopback by default).

    The SDK's backend binds every interface; an unauthenticated API that can start and signal
    anything has no business on a LAN, so this one binds where it is told. :meth:`start` sets the
    backend's private state as the SDK's own does (``_compat.BACKEND_STATE``).

    Args:
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one (see :attr:`address` after :meth:`start`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(port=port)
        self._host = host

    @property
    def address(self) -> str:
        """``host:port`` that clients and workers connect to."""
        return f"{self._host}:{self._port}"

    def start(self) -> str:
        """Start serving.

        Returns:
            The ``host:port`` address the backend listens on.

        Raises:
            OSError: When the address cannot be bound.
        """
        self._shutdown_event.clear()
        # One thread per open GetWorkItems stream plus the short calls of every HTTP request: more
        # than the SDK's 10 so that several workers and a burst of requests never queue behind them.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="durable-backend"))
        add_sidecar_servicer(self, server)
        try:
            bound = server.add_insecure_port(f"{self._host}:{self._port}")
        except RuntimeError:  # recent grpcio raises where older ones returned 0
            bound = 0
        if bound == 0:
            raise OSError(f"cannot listen on {self._host}:{self._port}")
        self._port = bound
        self._server = server
        server.start()
        return self.address


class TurnReportingCallback:
    """The app's response callback, plus a log line for every turn this host's worker answered.

    With several hosts on one backend, any worker may run a turn; ``-v`` shows which one did.

    Args:
        callback: The app's callback (its Valkey buffer); every call is passed on to it unchanged.
    """

    def __init__(self, callback: Any) -> None:
        self._callback = callback

    async def on_streaming_response_update(self, update: Any, context: Any) -> None:
        """Pass a streamed update on to the app's callback."""
        await self._callback.on_streaming_response_update(update, context)

    async def on_agent_response(self, response: Any, context: Any) -> None:
        """Pass the final response on to the app's callback, then log the turn."""
        await self._callback.on_agent_response(response, context)
        logger.info(
            "worker answered turn %s of %s in session %s",
            context.correlation_id,
            context.agent_name,
            context.session_id,
        )


def start_agent_worker(address: str, app: Any, *, max_concurrent_turns: int) -> Any:
    """Host a function app's durable functions in a worker connected to the backend.

    An ``AgentFunctionApp``'s agents become durable entities (``dafx-{name}``), as its entity
    functions register them on Azure; every orchestrator function becomes a bridge orchestrator and
    every activity function an activity (see ``_orchestrations``).

    Args:
        address: ``host:port`` of the durable backend.
        app: The function app; its agents, if it has any, are registered with its default callback
            (the app's Valkey buffer).
        max_concurrent_turns: Worker threads; each running turn or activity holds one until it ends.

    Returns:
        The started worker; call ``stop()`` on it when done.
    """
    from agent_framework_durabletask import DurableAIAgentWorker

    worker = TaskHubGrpcWorker(
        host_address=address,
        concurrency_options=ConcurrencyOptions(maximum_thread_pool_workers=max_concurrent_turns),
        logger=SDK_LOGGER,
    )
    agents = agents_of(app)
    hosted = frozenset(f"dafx-{name}".lower() for name in agents)
    register_orchestrations(worker, orchestration_functions_of(app), hosted)
    if not agents:
        worker.start()
        return worker
    agent_worker = DurableAIAgentWorker(worker, callback=TurnReportingCallback(callback_of(app)))
    for name, agent in agents.items():
        # A workflow's agent is registered under its workflow-scoped name, as AgentFunctionApp does.
        agent_worker.add_agent(agent, entity_id=name)
    agent_worker.start()
    return agent_worker
