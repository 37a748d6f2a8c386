"""The durable client binding without Azure: ``DurableOrchestrationClient``'s methods over the Durable Task SDK.

On Azure the durable extension hands an HTTP function a JSON blob for its durable client binding, and
``azure-functions-durable`` turns it into a ``DurableOrchestrationClient`` that talks to the extension's
HTTP API. Here there is no extension: the handlers get a :class:`DurableClientShim` instead, which
offers the client's entity and orchestration methods on top of the Durable Task SDK's gRPC client,
with the same signatures and return types.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import quote

import azure.functions as func
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.PurgeHistoryResult import PurgeHistoryResult
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationState, OrchestrationStatus
from durabletask.entities import EntityInstanceId

from ._compat import (
    EntityStateResponse,
)
from ._durable import SDK_LOGGER
from ._orchestration_functions import from_payload, to_payload


class UnsupportedEntityKeyError(ValueError):
    """An entity id the Durable Task SDK refuses (it has no room for ``@`` in names or keys).

    The Functions durable extension accepts such keys, so this is a limit of the local backend, not
    of the request: the host answers it with a 400 that says so rather than a 500.
    """


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
            client = AsyncTaskHubGrpcClient(host_address=self._address, logger=SDK_LOGGER)
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

    async def start_new(
        self,
        orchestration_function_name: str,
        instance_id: str | None = None,
        client_input: Any | None = None,
        version: str | None = None,
    ) -> str:
        """Start an orchestration instance, as ``DurableOrchestrationClient.start_new`` does.

        Args:
            orchestration_function_name: The orchestrator function's name.
            instance_id: The instance id; a new one when None.
            client_input: A JSON-serialisable input (the SDK's serializer, custom objects included).
            version: Accepted for signature compatibility; orchestration versions are not emulated.

        Returns:
            The instance id.
        """
        instance = instance_id or uuid.uuid4().hex
        return await self._client().schedule_new_orchestration(
            orchestration_function_name, input=to_payload(client_input), instance_id=instance
        )

    async def get_status(
        self,
        instance_id: str,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = False,
    ) -> DurableOrchestrationStatus:
        """An instance's status, as ``DurableOrchestrationClient.get_status`` returns it.

        Args:
            instance_id: The instance id.
            show_history: Accepted for signature compatibility; the history is not returned.
            show_history_output: Accepted for signature compatibility.
            show_input: Accepted for signature compatibility; the input is always returned.

        Returns:
            The status (runtime status, custom status, input, output, timestamps); a falsy status
            with a message when there is no such instance, as on Azure.
        """
        state = await self._client().get_orchestration_state(instance_id)
        if state is None:
            return DurableOrchestrationStatus(message=f"Instance {instance_id} not found")
        return status_of(state)

    async def raise_event(
        self,
        instance_id: str,
        event_name: str,
        event_data: Any = None,
        task_hub_name: str | None = None,
        connection_name: str | None = None,
    ) -> None:
        """Raise an event for an instance, as ``DurableOrchestrationClient.raise_event`` does.

        Raises:
            ValueError: When ``event_name`` is empty.
            Exception: When there is no such instance, or it is no longer running (the messages the
                Functions client raises).
        """
        if not event_name:
            raise ValueError("event_name must be a valid string.")
        await self._running(instance_id)
        await self._client().raise_orchestration_event(instance_id, event_name, data=_json_value(event_data))

    async def terminate(self, instance_id: str, reason: str) -> None:
        """Terminate an instance, as ``DurableOrchestrationClient.terminate`` does.

        Raises:
            Exception: When there is no such instance, or it is no longer running.
        """
        await self._running(instance_id)
        await self._client().terminate_orchestration(instance_id, output=reason, recursive=False)

    async def purge_instance_history(self, instance_id: str) -> PurgeHistoryResult:
        """Delete an instance's state and history, as ``DurableOrchestrationClient.purge_instance_history`` does.

        Returns:
            ``PurgeHistoryResult`` with ``instances_deleted`` 1, or 0 when there was no such instance.
        """
        result = await self._client().purge_orchestration(instance_id, recursive=False)
        return PurgeHistoryResult(instancesDeleted=result.deleted_instance_count)

    def get_client_response_links(self, request: Any, instance_id: str) -> dict[str, str]:
        """The instance's management URLs on this host, as the Functions client builds them."""
        base = _origin_of(request) + "/runtime/webhooks/durabletask/instances/" + quote(instance_id, safe="")
        return {
            "id": instance_id,
            "statusQueryGetUri": base,
            "sendEventPostUri": base + "/raiseEvent/{eventName}",
            "terminatePostUri": base + "/terminate?reason={text}",
            "purgeHistoryDeleteUri": base,
        }

    def create_check_status_response(self, request: Any, instance_id: str) -> func.HttpResponse:
        """A 202 with the management URLs and a Location header, as ``create_check_status_response`` returns."""
        links = self.get_client_response_links(request, instance_id)
        return func.HttpResponse(
            status_code=202,
            body=json.dumps(links),
            headers={"Content-Type": "application/json", "Location": links["statusQueryGetUri"], "Retry-After": "10"},
        )

    async def wait_for_completion_or_create_check_status_response(
        self,
        request: Any,
        instance_id: str,
        timeout_in_milliseconds: int = 10000,
        retry_interval_in_milliseconds: int = 1000,
    ) -> func.HttpResponse:
        """The output once the instance ends within the timeout, else the check-status response.

        As the Functions client: 200 with the output when completed, 200 with the status when
        terminated, 500 with the status when failed, 202 with the management URLs on timeout.
        """
        if retry_interval_in_milliseconds > timeout_in_milliseconds:
            raise Exception(
                f"Total timeout {timeout_in_milliseconds} (ms) should be bigger than "
                f"retry timeout {retry_interval_in_milliseconds} (ms)"
            )
        deadline = time.monotonic() + timeout_in_milliseconds / 1000
        while True:
            status = await self.get_status(instance_id)
            runtime = status.runtime_status.value if status and status.runtime_status else None
            if runtime == "Completed":
                return _json_response(200, status.output)
            if runtime in ("Terminated", "Canceled"):
                return _json_response(200, status.to_json())
            if runtime == "Failed":
                return _json_response(500, status.to_json())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.create_check_status_response(request, instance_id)
            await asyncio.sleep(min(retry_interval_in_milliseconds / 1000, remaining))

    async def _running(self, instance_id: str) -> None:
        state = await self._client().get_orchestration_state(instance_id, fetch_payloads=False)
        if state is None:
            raise Exception(f"No instance with ID '{instance_id}' found.")
        if state.runtime_status not in (
            OrchestrationStatus.RUNNING,
            OrchestrationStatus.PENDING,
            OrchestrationStatus.SUSPENDED,
        ):
            raise Exception(
                f"The instance '{instance_id}' is not running (it is {_RUNTIME_STATUS[state.runtime_status]})."
            )

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(
            f"devhost's durable client does not offer {name!r}; see docs/orchestrations.md for what it does"
        )


_RUNTIME_STATUS = {
    OrchestrationStatus.RUNNING: "Running",
    OrchestrationStatus.COMPLETED: "Completed",
    OrchestrationStatus.CONTINUED_AS_NEW: "ContinuedAsNew",
    OrchestrationStatus.FAILED: "Failed",
    OrchestrationStatus.TERMINATED: "Terminated",
    OrchestrationStatus.PENDING: "Pending",
    OrchestrationStatus.SUSPENDED: "Suspended",
}


def status_of(state: OrchestrationState) -> DurableOrchestrationStatus:
    """A Durable Task instance state in the Functions client's shape (``DurableOrchestrationStatus``)."""
    runtime = _RUNTIME_STATUS[state.runtime_status]
    if state.runtime_status == OrchestrationStatus.FAILED and state.failure_details is not None:
        output: Any = state.failure_details.message
    elif state.runtime_status == OrchestrationStatus.TERMINATED:
        output = _decoded(state.serialized_output)
    else:
        output = from_payload(_decoded(state.serialized_output))
    return DurableOrchestrationStatus(
        name=state.name,
        instanceId=state.instance_id,
        createdTime=state.created_at.isoformat(),
        lastUpdatedTime=state.last_updated_at.isoformat(),
        input=from_payload(_decoded(state.serialized_input)),
        output=output,
        runtimeStatus=runtime,
        customStatus=_decoded(state.serialized_custom_status),
    )


def _decoded(serialized: str | None) -> Any:
    return json.loads(serialized) if serialized else None


def _json_value(value: Any) -> Any:
    # The Functions client posts json.dumps(value): a value that fails there fails here too.
    return json.loads(json.dumps(value)) if value is not None else None


def _json_response(status_code: int, body: Any) -> func.HttpResponse:
    text = body if isinstance(body, str) else json.dumps(body)
    return func.HttpResponse(
        status_code=status_code, body=text, mimetype="application/json", headers={"Content-Type": "application/json"}
    )


def _origin_of(request: Any) -> str:
    url = str(getattr(request, "url", "") or "")
    scheme, separator, rest = url.partition("://")
    if not separator:
        return ""
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _entity_instance_id(entity_id: Any) -> EntityInstanceId:
    name = getattr(entity_id, "name", None)
    key = getattr(entity_id, "key", None)
    if not isinstance(name, str) or not isinstance(key, str):
        raise TypeError("entityId must be an azure.durable_functions.EntityId with a name and a key")
    try:
        return EntityInstanceId(name, key)
    except ValueError as error:
        raise UnsupportedEntityKeyError(f"the local Durable Task backend refuses this entity id: {error}") from error
