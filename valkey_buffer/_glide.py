"""The GLIDE glue every module shares: atomic batches, decoding, error translation and pub/sub calls.

Standalone and cluster clients differ in small ways (the batch class, sharded pub/sub, the names of
subscription modes); each difference is answered here once, from the client or the ``cluster`` flag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

from glide import (
    Batch,
    ClusterBatch,
    GlideClientConfiguration,
    GlideClusterClient,
    GlideClusterClientConfiguration,
    GlideError,
    RequestError,
)

from ._connection import GlideAnyClient
from ._errors import ValkeyUnavailableError

# The server's answer when it will not run a pub/sub command or allow a channel.
_REFUSAL = re.compile(r"(no permissions|noperm|unknown command|disabled)[^\n]*(publish|subscribe|channel)", re.I)
# The server's answer when it will not run scripts.
_SCRIPTING_REFUSAL = re.compile(r"(no permissions|noperm|unknown command|disabled)[^\n]*(evalsha|script|eval)", re.I)

ClientScope = Callable[[], AbstractAsyncContextManager[GlideAnyClient]]
"""Opens the running event loop's client; a GLIDE error inside becomes ``ValkeyUnavailableError``."""


def text(value: bytes | str) -> str:
    """A reply's key, id or value as text (GLIDE answers bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def atomic_batch(*, cluster: bool) -> Batch | ClusterBatch:
    """An empty atomic batch (MULTI/EXEC) for the server kind; in a cluster its keys must share a slot."""
    return ClusterBatch(is_atomic=True) if cluster else Batch(is_atomic=True)


@contextmanager
def unavailable_on_glide_error(address: str) -> Iterator[None]:
    """Turn a GLIDE error raised inside into ``ValkeyUnavailableError`` (what callers map to 503)."""
    try:
        yield
    except GlideError as error:
        raise ValkeyUnavailableError(f"Valkey at {address} is unavailable: {error}") from error


def is_pubsub_refusal(error: Exception) -> bool:
    """Whether ``error`` says that the server refuses pub/sub (not that it is unreachable)."""
    return isinstance(error, RequestError) and bool(_REFUSAL.search(str(error)))


def is_scripting_refusal(error: Exception) -> bool:
    """Whether ``error`` says that the server refuses Lua scripts (an ACL, a disabled command)."""
    return isinstance(error, RequestError) and bool(_SCRIPTING_REFUSAL.search(str(error)))


def add_notification(batch: Batch | ClusterBatch, channel: str) -> None:
    """Append a notification on ``channel`` to ``batch`` (SPUBLISH in a cluster: it stays on the slot)."""
    if isinstance(batch, ClusterBatch):
        batch.publish("", channel, sharded=True)
    else:
        batch.publish("", channel)


async def publish(client: GlideAnyClient, channel: str) -> None:
    """Publish an empty message on ``channel`` (sharded in a cluster)."""
    if isinstance(client, GlideClusterClient):
        await client.publish("", channel, sharded=True)
    else:
        await client.publish("", channel)


async def subscribe(client: GlideAnyClient, channels: set[str]) -> None:
    """Ask GLIDE for ``channels`` (lazily: GLIDE subscribes in the background, and again after a reconnect)."""
    if isinstance(client, GlideClusterClient):
        await client.ssubscribe_lazy(channels)
    else:
        await client.subscribe_lazy(channels)


async def unsubscribe(client: GlideAnyClient, channels: set[str]) -> None:
    """Tell GLIDE to drop ``channels`` (lazily)."""
    if isinstance(client, GlideClusterClient):
        await client.sunsubscribe_lazy(channels)
    else:
        await client.unsubscribe_lazy(channels)


def active_channels(client: GlideAnyClient, state: Any) -> set[str]:
    """The channels GLIDE's subscription ``state`` (``get_subscriptions()``) reports as active."""
    mode: Any = (
        GlideClusterClientConfiguration.PubSubChannelModes.Sharded
        if isinstance(client, GlideClusterClient)
        else GlideClientConfiguration.PubSubChannelModes.Exact
    )
    return {text(channel) for channel in state.actual_subscriptions.get(mode, ())}
