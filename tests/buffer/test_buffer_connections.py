"""Cluster mode and Microsoft Entra ID token renewal, against real valkey-server processes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.buffer.helpers import MakeBuffer, collect, new_id, stream_turn
from tests.eventually import eventually
from tests.shown_text import chunks_text
from tests.valkey_servers import ValkeyCluster, ValkeyProcess
from valkey_buffer import ValkeySettings


async def test_cluster_round_trip_and_live_readers_across_slots(
    cluster_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    buffer = make_buffer(cluster_settings)
    sessions = [new_id() for _ in range(12)]  # keys spread over all three primaries
    readers = [asyncio.create_task(collect(buffer, s, correlation_id="t")) for s in sessions]
    await eventually(lambda: buffer.reader_stats().active == 12, message="12 readers never joined the live feed")
    await asyncio.gather(*(stream_turn(buffer, s, "t", [s, " done"]) for s in sessions))
    results = await asyncio.wait_for(asyncio.gather(*readers), 15)
    assert [chunks_text(chunks) for chunks in results] == [f"{s} done" for s in sessions]
    tail = await collect(buffer, sessions[0], results[0][0].entry_id)
    assert chunks_text(tail) == " done"


async def test_cluster_keys_really_live_on_different_primaries(valkey_cluster: ValkeyCluster) -> None:
    slots = {valkey_cluster.nodes[0].command("CLUSTER", "KEYSLOT", f"agent-stream:{new_id()}") for _ in range(30)}
    owners = {slot * 3 // 16384 for slot in slots}
    assert owners == {0, 1, 2}


@dataclass
class _Token:
    token: str
    expires_on: int


class RotatingCredential:
    """Stands in for azure-identity: each token is short-lived and replaces the ACL password."""

    def __init__(self, server: ValkeyProcess, user: str, lifetime: float) -> None:
        self.server = server
        self.user = user
        self.lifetime = lifetime
        self.issued: list[str] = []
        self._counter = itertools.count(1)

    def get_token(self, *scopes: str) -> _Token:
        assert scopes == ("https://redis.azure.com/.default",)
        token = f"token-{next(self._counter)}"
        # Only the newest token is accepted from now on, as with a rotated Entra ID token.
        self.server.command("ACL", "SETUSER", self.user, "on", "resetpass", f">{token}", "~*", "+@all")
        self.issued.append(token)
        return _Token(token, int(time.time() + self.lifetime))


async def test_entra_token_is_renewed_before_expiry_and_survives_reconnects(
    make_valkey_server: Callable[[], ValkeyProcess], make_buffer: MakeBuffer
) -> None:
    server = make_valkey_server()
    user = "00000000-aaaa-bbbb-cccc-000000000001"
    credential = RotatingCredential(server, user, lifetime=4)
    settings = ValkeySettings(host=server.host, port=server.port, auth="entra", username=user, request_timeout_ms=500)
    buffer = make_buffer(settings, credential=credential, token_refresh_margin_seconds=2)
    session = new_id()
    await stream_turn(buffer, session, "before", ["one"])
    assert credential.issued == ["token-1"]

    # Renewal is due about 2 s before the 4 s expiry.
    await eventually(lambda: len(credential.issued) >= 2, timeout=3, message="the token was not renewed")

    # Drop every connection of the identity: GLIDE reconnects with the password it has now.
    server.command("CLIENT", "KILL", "USER", user)
    await asyncio.sleep(0.3)
    await stream_turn(buffer, session, "after", ["two"])
    assert chunks_text(await collect(buffer, session, correlation_id="after")) == "two"
    assert buffer.stats.entries_dropped == 0
    assert f"user={user}" in str(server.command("CLIENT", "LIST"))


async def test_entra_username_defaults_to_the_tokens_object_id() -> None:
    import base64
    import json

    from valkey_buffer import EntraTokenSource

    payload = base64.urlsafe_b64encode(json.dumps({"oid": "object-id-42"}).encode()).decode().rstrip("=")

    class JwtCredential:
        def get_token(self, *scopes: str) -> _Token:
            return _Token(f"header.{payload}.signature", int(time.time() + 3600))

    username, token, _ = await EntraTokenSource(JwtCredential()).fetch()
    assert username == "object-id-42" and token.startswith("header.")

    class OpaqueCredential:
        def get_token(self, *scopes: str) -> _Token:
            return _Token("opaque", int(time.time() + 3600))

    with pytest.raises(ValueError, match="VALKEY_USERNAME"):
        await EntraTokenSource(OpaqueCredential()).fetch()
