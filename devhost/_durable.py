"""Durable execution without Azure: the Durable Task SDK's in-memory backend, its worker, and a client binding shim.

On Azure the durable extension hands an HTTP function a JSON blob for its durable client binding, and
``azure-functions-durable`` turns it into a ``DurableOrchestrationClient`` that talks to the extension's
HTTP API. Here there is no extension: the handlers get a :class:`DurableClientShim` instead, which
offers the two client methods this app uses on top of the Durable Task SDK's gRPC client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent import futures
from typing import Any

import grpc
from durabletask.client import AsyncTaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker

from ._compat import (
    EntityStateResponse,
    InMemoryOrchestrationBackend,
    add_sidecar_servicer,
    agents_of,
    callback_of,
)

logger = logging.getLogger("devhost")

# The durable SDK's own logs (connections, work items) are not the host's: a logger outside the
# logging tree, with nowhere to go, keeps them out of the console.
_QUIET = logging.Logger("devhost.durabletask")
_QUIET.addHandler(logging.NullHandler())


class UnsupportedEntityKeyError(ValueError):
    """An entity id the Durable Task SDK refuses (it has no room for ``@`` in names or keys).

    The Functions durable extension accepts such keys, so this is a limit of the local backend, not
    of the request: the host answers it with a 400 that says so rather than a 500.
    """


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


class DurableClientShim:
    """Stands in for ``DurableOrchestrationClient`` in the handlers: entity signals and entity state.

    Only the two methods this app's handlers use are offered; anything else fails loudly with a
    sentence that says so, rather than half-working.

    Args:
        address: ``host:port`` of the durable backend.
    """

    def __init__(self, address: str) -> None:
        self._address = address
        self._clients: dict[asyncio.AbstractEventLoop, AsyncTaskHubGrpcClient] = {}

    def _client(self) -> AsyncTaskHubGrpcClient:
        # grpc.aio channels belong to the loop that made them; the host has one loop, keep it general.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = AsyncTaskHubGrpcClient(host_address=self._address, logger=_QUIET)
            self._clients[loop] = client
        return client

    async def signal_entity(
        self,
        entityId: Any,  # the name azure-functions-durable uses, so keyword calls work too
        operation_name: str,
        operation_input: Any | None = None,
        task_hub_name: str | None = None,
        connection_name: str | None = None,
    ) -> None:
        """Signal an entity (fire and forget), as ``DurableOrchestrationClient.signal_entity`` does.

        Args:
            entityId: An ``azure.durable_functions.EntityId`` (name and key).
            operation_name: The entity operation, e.g. ``run``.
            operation_input: A JSON-serialisable input; it travels as JSON exactly as on Azure.
            task_hub_name: Accepted for signature compatibility; there is one task hub here.
            connection_name: Accepted for signature compatibility.
        """
        # The Functions client posts json.dumps(input) (and drops falsy input); do the same so an
        # input that would fail on Azure fails here too.
        payload = json.loads(json.dumps(operation_input)) if operation_input else None
        await self._client().signal_entity(_entity_instance_id(entityId), operation_name, payload)

    async def read_entity_state(
        self,
        entityId: Any,
        task_hub_name: str | None = None,
        connection_name: str | None = None,
    ) -> EntityStateResponse:
        """Read an entity's state, as ``DurableOrchestrationClient.read_entity_state`` does.

        Args:
            entityId: An ``azure.durable_functions.EntityId`` (name and key).
            task_hub_name: Accepted for signature compatibility; there is one task hub here.
            connection_name: Accepted for signature compatibility.

        Returns:
            ``EntityStateResponse``: ``entity_exists`` False when the entity was never created, else
            the state parsed from JSON (the same shape the Functions client returns).
        """
        metadata = await self._client().get_entity(_entity_instance_id(entityId), include_state=True)
        if metadata is None:
            return EntityStateResponse(False)
        return EntityStateResponse(True, metadata.get_typed_state())

    async def aclose(self) -> None:
        """Close the gRPC channels opened so far (idempotent)."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(
            f"devhost's durable client offers signal_entity and read_entity_state only, not {name!r}"
        )


def _entity_instance_id(entity_id: Any) -> EntityInstanceId:
    name = getattr(entity_id, "name", None)
    key = getattr(entity_id, "key", None)
    if not isinstance(name, str) or not isinstance(key, str):
        raise TypeError("entityId must be an azure.durable_functions.EntityId with a name and a key")
    try:
        return EntityInstanceId(name, key)
    except ValueError as error:
        raise UnsupportedEntityKeyError(f"the local Durable Task backend refuses this entity id: {error}") from error


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
    """Host an ``AgentFunctionApp``'s agents as durable entities (``dafx-{name}``) in a worker connected to the backend.

    Args:
        address: ``host:port`` of the durable backend.
        app: The ``AgentFunctionApp``; its agents are registered with its default callback (the
            app's Valkey buffer), as its entity functions register them on Azure.
        max_concurrent_turns: Worker threads; each running turn holds one until it commits.

    Returns:
        The started ``DurableAIAgentWorker``; call ``stop()`` on it when done.
    """
    from agent_framework_durabletask import DurableAIAgentWorker

    worker = TaskHubGrpcWorker(
        host_address=address,
        concurrency_options=ConcurrencyOptions(maximum_thread_pool_workers=max_concurrent_turns),
        logger=_QUIET,
    )
    agent_worker = DurableAIAgentWorker(worker, callback=TurnReportingCallback(callback_of(app)))
    for agent in agents_of(app):
        agent_worker.add_agent(agent)
    agent_worker.start()
    return agent_worker
