"""GLIDE client creation: standalone or cluster, TLS, password or Microsoft Entra ID."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from typing import Any, Protocol

from glide import (
    BackoffStrategy,
    GlideClient,
    GlideClientConfiguration,
    GlideClusterClient,
    GlideClusterClientConfiguration,
    NodeAddress,
    ServerCredentials,
)

from ._settings import ENTRA_SCOPE, ValkeySettings

logger = logging.getLogger("valkey_buffer")

GlideAnyClient = GlideClient | GlideClusterClient


class TokenCredential(Protocol):
    """The part of an ``azure-identity`` (sync) credential the buffer uses."""

    def get_token(self, *scopes: str) -> Any: ...


class EntraTokenSource:
    """Fetches Microsoft Entra ID tokens for Azure Managed Redis and says when to renew them.

    One source is shared by all clients of a buffer; each client renews its own connection.

    Args:
        credential: A sync ``azure-identity`` credential; ``DefaultAzureCredential`` when ``None``
            (it honours ``AZURE_CLIENT_ID`` for a user-assigned managed identity).
        username: The identity's object id; read from the token's ``oid`` claim when ``None``.
        refresh_margin_seconds: Renew this long before the token expires (plus up to 10% jitter so
            that many instances do not renew at once).
    """

    def __init__(
        self,
        credential: TokenCredential | None = None,
        *,
        username: str | None = None,
        refresh_margin_seconds: float = 300.0,
    ) -> None:
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self._credential = credential
        self._username = username
        self.refresh_margin_seconds = refresh_margin_seconds

    async def fetch(self) -> tuple[str, str, float]:
        """Return ``(username, token, expires_on)``; the credential runs in a thread (it may do I/O)."""
        access_token = await asyncio.to_thread(self._credential.get_token, ENTRA_SCOPE)
        token = access_token.token
        username = self._username or _object_id_of(token)
        return username, token, float(access_token.expires_on)

    def seconds_until_renewal(self, expires_on: float) -> float:
        """How long to wait before renewing a token that expires at ``expires_on``."""
        lifetime_left = expires_on - time.time()
        margin = min(self.refresh_margin_seconds, lifetime_left / 2)
        jitter = random.uniform(0, margin * 0.1)
        return max(1.0, lifetime_left - margin - jitter)


async def create_client(
    settings: ValkeySettings,
    *,
    token_source: EntraTokenSource | None = None,
    request_timeout_ms: int | None = None,
    client_name: str = "valkey-buffer",
) -> tuple[GlideAnyClient, asyncio.Task[None] | None]:
    """Create a GLIDE client for ``settings``; with Entra ID also the task that renews its token.

    Args:
        settings: Where and how to connect.
        token_source: Required when ``settings.auth`` is ``entra``.
        request_timeout_ms: Overrides ``settings.request_timeout_ms`` (blocking reads need longer).
        client_name: Shown in ``CLIENT LIST``.

    Returns:
        The client and, with Entra ID, the renewal task (cancel it before closing the client).
    """
    credentials: ServerCredentials | None = None
    expires_on = 0.0
    if settings.auth == "entra":
        if token_source is None:
            raise ValueError("token_source is required when auth is 'entra'")
        username, token, expires_on = await token_source.fetch()
        credentials = ServerCredentials(password=token, username=username)
    elif settings.password:
        credentials = ServerCredentials(password=settings.password, username=settings.username)

    options: dict[str, Any] = {
        "addresses": [NodeAddress(settings.host, settings.port)],
        "use_tls": settings.tls,
        "credentials": credentials,
        "request_timeout": request_timeout_ms or settings.request_timeout_ms,
        "client_name": client_name,
        # Keep reconnecting during an outage, at most about 0.7 s apart, so service resumes soon after.
        "reconnect_strategy": BackoffStrategy(num_of_retries=6, factor=10, exponent_base=2),
    }
    client: GlideAnyClient
    if settings.cluster:
        client = await GlideClusterClient.create(GlideClusterClientConfiguration(**options))
    else:
        client = await GlideClient.create(GlideClientConfiguration(**options))

    renewal = None
    if token_source is not None and settings.auth == "entra":
        renewal = asyncio.get_running_loop().create_task(
            _renew_token_forever(client, token_source, expires_on), name=f"{client_name}-token-renewal"
        )
    return client, renewal


async def _renew_token_forever(client: GlideAnyClient, source: EntraTokenSource, expires_on: float) -> None:
    while True:
        await asyncio.sleep(source.seconds_until_renewal(expires_on))
        try:
            _, token, expires_on = await source.fetch()
            # immediate_auth re-authenticates the live connections now, not only at reconnect.
            await client.update_connection_password(token, immediate_auth=True)
            logger.info("Renewed the Entra ID token of a Valkey connection")
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("Could not renew the Entra ID token; retrying in 10 s", exc_info=True)
            expires_on = time.time() + source.refresh_margin_seconds + 10


def _object_id_of(token: str) -> str:
    # The token is a JWT: its payload's oid claim is the identity's object id (the ACL user name).
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["oid"])
    except (IndexError, KeyError, ValueError) as error:
        raise ValueError("VALKEY_USERNAME is required: the token has no readable oid claim") from error
